"""People's decisions: the annotation store, the review app, the human curation stages and the
export of what they keep. A panel (real people in the app, or a registered simulated one)
writes to the same store."""
