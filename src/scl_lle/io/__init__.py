"""Files in and out: image and RAW/HEIC decoding and writing, pixel conversions, atomic writes."""
