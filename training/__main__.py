"""``python -m training``: see training/train.py."""

import sys

from training.train import main

sys.exit(main())
