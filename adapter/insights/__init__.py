"""Insights: the booking design's success metrics and the booking funnel, from our own records."""
