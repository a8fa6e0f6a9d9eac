"""Bulk imports: files of rows → Segment-shaped calls → touchpoints → the broker."""
