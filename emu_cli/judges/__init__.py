"""Real judges of generated images (CLIP aesthetic, CLIP score, PickScore, HPSv2, ImageReward,
VQAScore), the judge names a command line takes (``--judge``), and how far a judge agrees with
people."""
