"""scripts/calibrate_msda.py's choice (the rule that decides what weights/config.json ships), on
hand-made rows."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "calibrate_msda.py"
_spec = importlib.util.spec_from_file_location("calibrate_msda", SCRIPT)
calibrate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(calibrate)


def _row(power, msda, gate, miou, mvc8, share=None):
    return {"power": power, "msda": msda, "gate": gate, "miou": miou, "mvc8": mvc8,
            "msda_share": share if msda != "off" else None}


ROWS = [
    _row(1.0, "off", None, 0.555, 0.956),
    _row(1.0, "0.6", 3.0, 0.564, 0.9565, 0.08),   # qualifies at p 1
    _row(1.0, "0.8", 0.0, 0.577, 0.940, 0.35),    # best mIoU at p 1, but too many points, less stable
    _row(4.0, "off", None, 0.569, 0.957),
    _row(4.0, "0.6", 6.0, 0.576, 0.956, 0.08),    # better mIoU, but below p 4's off in mVC8
    _row(4.0, "0.7", 6.0, 0.572, 0.958, 0.15),    # qualifies at p 4: the choice
]


def test_the_best_qualifying_setting_over_powers():
    assert calibrate.choose(ROWS, 0.25) == {"msda": True, "msda_threshold": 0.7, "msda_gate": 6.0,
                                            "interpolation_power": 4.0}


def test_a_share_limit_and_a_stability_floor_narrow_the_choice():
    # p 4's 0.7 updates 15%: MSDA off at p 4 beats p 1's qualifying setting in both metrics
    assert calibrate.choose(ROWS, 0.10) == {"msda": False, "interpolation_power": 4.0}
    assert calibrate.choose(ROWS, 0.25, min_mvc8=0.9568)["msda_threshold"] == 0.7
    assert calibrate.choose(ROWS, 0.25, min_mvc8=0.99) is None


def test_msda_on_at_a_lower_power_when_it_is_the_most_accurate():
    rows = [_row(1.0, "off", None, 0.55, 0.95), _row(1.0, "0.6", 3.0, 0.58, 0.96, 0.1),
            _row(4.0, "off", None, 0.57, 0.95)]
    assert calibrate.choose(rows, 0.25)["interpolation_power"] == 1.0
    tie = [_row(4.0, "off", None, 0.57, 0.95), _row(4.0, "0.6", 3.0, 0.57, 0.96, 0.1)]
    assert calibrate.choose(tie, 0.25)["msda"] is True  # as good in mIoU, steadier: the rule ships it


def test_msda_off_when_nothing_qualifies_at_the_most_accurate_power():
    rows = [r for r in ROWS if r["msda"] in ("off", "0.8") or r["gate"] == 6.0 and r["msda"] == "0.6"]
    assert calibrate.choose(rows, 0.25) == {"msda": False, "interpolation_power": 4.0}


def test_hysteresis_is_part_of_the_grid_and_msda_is_compared_within_it():
    def row(h, msda, miou, mvc8, share=None):
        return {**_row(8.0, msda, 6.0 if msda != "off" else None, miou, mvc8, share), "hysteresis": h}

    rows = [
        row([0.75, 0.0], "off", 0.581, 0.964), row([0.75, 0.0], "0.6", 0.588, 0.9643, 0.07),
        row([1.0, 4.0], "off", 0.588, 0.9606), row([1.0, 4.0], "0.6", 0.5927, 0.9606, 0.07),
        # more accurate still, but below MSDA off under its own hysteresis in mVC8
        row([1.0, 6.0], "off", 0.589, 0.9590), row([1.0, 6.0], "0.6", 0.5935, 0.9585, 0.07),
    ]
    assert calibrate.choose(rows, 0.25) == {"msda": True, "msda_threshold": 0.6, "msda_gate": 6.0,
                                            "interpolation_power": 8.0, "label_hysteresis": 1.0,
                                            "label_hysteresis_power": 4.0}
    # a stability floor above it leaves the uniform margin
    assert calibrate.choose(rows, 0.25, min_mvc8=0.962)["label_hysteresis_power"] == 0.0
    assert calibrate.parse_hysteresis("0.75:0,1:4,0.5") == [(0.75, 0.0), (1.0, 4.0), (0.5, 0.0)]
    assert calibrate.parse_hysteresis(None) is None
    import pytest

    with pytest.raises(ValueError, match="hysteresis_power -1.0"):
        calibrate.parse_hysteresis("1:-1")
