"""Records to a frame, scaling fits, the break-even, figures and the report. Never imports torch."""
