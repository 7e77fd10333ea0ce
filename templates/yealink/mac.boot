#!version:1.0.0.1
## autoprov: boot file for {{ model.name }} {{ mac }} (VENDORS.md §1.1): the model's
## common file, then the phone's own; later files win.
{%- for f in model.common_files %}
{%- if f is not ending_with(pat=".boot") %}
include:config "{{ f }}"
{%- endif %}
{%- endfor %}
include:config "{{ mac }}.cfg"
overwrite_mode = 1
