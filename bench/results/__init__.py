"""The study folder on disk: its layout and the records in it. No torch, no pandas."""
