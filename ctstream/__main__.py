import sys

from ctstream.cli import main

sys.exit(main())
