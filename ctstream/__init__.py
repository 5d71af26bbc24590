"""ctstream: SQL Server Change Tracking → Kafka → BigQuery."""

__version__ = "0.1.0"
