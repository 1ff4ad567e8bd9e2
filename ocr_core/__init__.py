"""The platform-neutral core: one typed job in, one typed result out.

`ocr_core` never imports `bots` or `sinks`: bots enqueue work by dotted name, and
results reach sinks through delivery jobs enqueued by dotted name as well.
"""
