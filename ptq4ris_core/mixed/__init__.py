"""Mixed precision: what each layer costs and how much it matters, and a bit-width per layer chosen by an
integer program under a size and a bit-operations budget (Mix-QSAM; Mix-QViT / LRP-QViT).

- ``profile``: each quantized layer's weight count, multiply-adds per sample, neighbours;
- ``importance``: Mix-QSAM's KL importance and cross-layer synergy; LRP relevance;
- ``sensitivity``: one layer at each candidate bit-width, the rest at 8 bits;
- ``allocate``: the integer program (SciPy's ``milp``, HiGHS);
- ``study``: all of it for one model, cached under the model's fingerprint.
"""
