-- ctstream demo database for docker/compose.yaml: Change Tracking on, three tracked tables.
--
-- Run by the sqlserver-init service:
--   sqlcmd -C -S sqlserver -U sa -P "$MSSQL_SA_PASSWORD" -b -i /init/init.sql
-- Safe to run again: every step checks first, and sample rows go only into empty tables.
-- Sample rows are inserted AFTER Change Tracking is enabled on their table, so they show up
-- as change events even without an initial snapshot.

:on error exit
SET NOCOUNT ON;
GO

IF DB_ID(N'ctstream_demo') IS NULL
    CREATE DATABASE ctstream_demo;
GO

-- ctstream reads every poll in one SNAPSHOT transaction.
ALTER DATABASE ctstream_demo SET ALLOW_SNAPSHOT_ISOLATION ON;
GO

IF NOT EXISTS (SELECT 1 FROM sys.change_tracking_databases
               WHERE database_id = DB_ID(N'ctstream_demo'))
    ALTER DATABASE ctstream_demo
        SET CHANGE_TRACKING = ON (CHANGE_RETENTION = 2 DAYS, AUTO_CLEANUP = ON);
GO

USE ctstream_demo;
GO

-- CREATE SCHEMA must be alone in its batch, hence EXEC.
IF SCHEMA_ID(N'sales') IS NULL
    EXEC (N'CREATE SCHEMA sales AUTHORIZATION dbo;');
GO

-- Tables -------------------------------------------------------------------------------

IF OBJECT_ID(N'dbo.items', N'U') IS NULL
    CREATE TABLE dbo.items (
        item_id    int IDENTITY(1, 1) NOT NULL CONSTRAINT PK_items PRIMARY KEY,
        name       nvarchar(200)      NOT NULL,
        price      decimal(18, 2)     NULL,
        updated_at datetime2          NOT NULL
            CONSTRAINT DF_items_updated_at DEFAULT SYSUTCDATETIME()
    );
GO

-- A composite primary key: ctstream keys ('1','23') and ('12','3') must stay distinct.
IF OBJECT_ID(N'dbo.order_lines', N'U') IS NULL
    CREATE TABLE dbo.order_lines (
        order_id int          NOT NULL,
        line_no  int          NOT NULL,
        sku      nvarchar(50) NOT NULL,
        qty      int          NOT NULL,
        CONSTRAINT PK_order_lines PRIMARY KEY (order_id, line_no)
    );
GO

IF OBJECT_ID(N'sales.customers', N'U') IS NULL
    CREATE TABLE sales.customers (
        customer_id bigint         NOT NULL CONSTRAINT PK_customers PRIMARY KEY,
        email       nvarchar(320)  NOT NULL,
        created     datetimeoffset NOT NULL
            CONSTRAINT DF_customers_created DEFAULT SYSDATETIMEOFFSET()
    );
GO

-- Change Tracking per table ------------------------------------------------------------

IF NOT EXISTS (SELECT 1 FROM sys.change_tracking_tables
               WHERE object_id = OBJECT_ID(N'dbo.items'))
    ALTER TABLE dbo.items ENABLE CHANGE_TRACKING WITH (TRACK_COLUMNS_UPDATED = OFF);
GO

IF NOT EXISTS (SELECT 1 FROM sys.change_tracking_tables
               WHERE object_id = OBJECT_ID(N'dbo.order_lines'))
    ALTER TABLE dbo.order_lines ENABLE CHANGE_TRACKING WITH (TRACK_COLUMNS_UPDATED = OFF);
GO

IF NOT EXISTS (SELECT 1 FROM sys.change_tracking_tables
               WHERE object_id = OBJECT_ID(N'sales.customers'))
    ALTER TABLE sales.customers ENABLE CHANGE_TRACKING WITH (TRACK_COLUMNS_UPDATED = OFF);
GO

-- Sample rows (only into empty tables) -------------------------------------------------

IF NOT EXISTS (SELECT 1 FROM dbo.items)
    INSERT INTO dbo.items (name, price)
    VALUES (N'Widget', 9.99),
           (N'Gadget', 24.50),
           (N'Gizmo', 3.75),
           (N'Thingamajig, large; "quoted"', NULL);
GO

IF NOT EXISTS (SELECT 1 FROM dbo.order_lines)
    INSERT INTO dbo.order_lines (order_id, line_no, sku, qty)
    VALUES (1, 1, N'WID-001', 2),
           (1, 23, N'GAD-002', 1),
           (12, 3, N'GIZ-003', 5);
GO

IF NOT EXISTS (SELECT 1 FROM sales.customers)
    INSERT INTO sales.customers (customer_id, email, created)
    VALUES (1001, N'ana@example.com', '2026-01-15T09:30:00+01:00'),
           (1002, N'bo@example.com', '2026-02-01T18:05:12.1234567-05:00'),
           (9007199254740993, N'big.id@example.com', SYSDATETIMEOFFSET());
GO

PRINT 'ctstream_demo ready: change tracking on dbo.items, dbo.order_lines, sales.customers';
GO
