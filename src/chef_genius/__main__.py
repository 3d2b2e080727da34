import sys

from chef_genius.cli import main

sys.exit(main())
