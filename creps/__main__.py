import sys

from creps.cli.main import main

sys.exit(main())
