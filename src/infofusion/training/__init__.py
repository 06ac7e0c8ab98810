"""Training: the loop and what a run leaves behind.

:mod:`.trainer` (the one loop, and building data and a model from a config), :mod:`.runs` (the run
folder, its files and their checks), :mod:`.randomness`, :mod:`.weight_averaging`, :mod:`.distributed`
(torchrun) and :mod:`.runinfo` (what a run records so it can be reproduced). Importing the package
imports none of them, so light modules can use :mod:`.randomness` without torch's training stack.
"""
