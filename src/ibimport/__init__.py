"""ibimport: import fleets of VM images into EC2 Image Builder, fast, safely and exactly once."""

__version__ = "0.1.0"
