"""SCI: symmetric alignment of the two towers (SymmAligner) and a consistent dual-view index (CI).

- `views`: the common input form that lets each tower read the other side's inputs;
- `train`: the SymmAligner trainer (task loss + the same loss on swapped inputs);
- `index`: the `ci` index backend (coarse lists in the query view, fine codes in the item view);
- `alignment`: measurements of the two defects SCI targets (space misalignment, routing consistency).
"""
