#!version:1.0.0.1
## autoprov: boot file for Yealink SIP-T33G 001565a1b2c3 (VENDORS.md §1.1): the model's
## common file, then the phone's own; later files win.
include:config "y000000000124.cfg"
include:config "001565a1b2c3.cfg"
overwrite_mode = 1
