"""Pixels in and out: reading and writing image files (8/16-bit, alpha, ICC, EXIF), resizing and
colour conversions, the model's condition recipes, LR cleaning and degradations, and the pictures
people read (grids, colour maps, plots)."""
