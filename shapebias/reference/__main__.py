import sys

from shapebias.reference import main

sys.exit(main())
