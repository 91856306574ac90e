"""Converters from public annotation formats to VLM-R1 JSONL (``vlm-r1 make-data ...``)."""
