#!version:1.0.0.1
## autoprov: common boot file, asked for by phones that have no {mac}.boot (not linked
## yet); the model comes from the User-Agent. Linked phones get {mac}.boot instead.
include:config "y000000000124.cfg"
overwrite_mode = 1
