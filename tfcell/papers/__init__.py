"""The papers tfcell reproduces, one package each: its protocol (settings), the
methods it compares and its report tables. Numbers live in `configs/`, commands
in `reproductions/`; the harness that runs them is `tfcell.experiments`.

    cfal    Mahbub et al. 2024, centre-focused affinity loss (IDC, Kather CRC)
"""
