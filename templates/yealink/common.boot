#!version:1.0.0.1
## autoprov: common boot file, asked for by phones that have no {mac}.boot (not linked
## yet); the model comes from the User-Agent. Linked phones get {mac}.boot instead.
{%- for f in model.common_files %}
{%- if f is not ending_with(pat=".boot") %}
include:config "{{ f }}"
{%- endif %}
{%- endfor %}
overwrite_mode = 1
