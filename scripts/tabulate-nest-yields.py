#!/usr/bin/env python3
"""Tabulate NEST's mean yields for the simulator (src/sim/nest-yields.csv).

Run once, in a virtual environment with nestpy:

    python3 -m venv /tmp/nestvenv && /tmp/nestvenv/bin/pip install nestpy==2.1.3
    /tmp/nestvenv/bin/python scripts/tabulate-nest-yields.py > src/sim/nest-yields.csv
    /tmp/nestvenv/bin/python scripts/tabulate-nest-yields.py --check > src/sim/nest-check.csv

Means of NEST's GetYields (no fluctuations) for the beta model (ER) and
nuclear recoils, at the drift field and liquid density of conditions v1:
20 energies per decade from 0.5 to 220 keV (the simulator's table), or with
--check every integer keV from 1 to 50 (what the simulator's drawn quanta
are tested against, at energies between the table's rows).
"""
import sys

import nestpy

FIELD_V_PER_CM = 96.5
DENSITY_G_PER_CM3 = 2.888

calc = nestpy.NESTcalc(nestpy.detectors.VDetector())
print(f"# NEST (nestpy 2.1.3) mean yields at {FIELD_V_PER_CM} V/cm, {DENSITY_G_PER_CM3} g/cm3: "
      f"scripts/tabulate-nest-yields.py {' '.join(sys.argv[1:])}")
print("recoil,energy_kev,photons,electrons")
if "--check" in sys.argv[1:]:
    energies = [float(k) for k in range(1, 51)]
else:
    energies = [0.5 * 10 ** (k / 20) for k in range(0, 54)]
for name, interaction in [("er", nestpy.interactions.beta), ("nr", nestpy.interactions.NR)]:
    for e in energies:
        y = calc.GetYields(interaction=interaction, energy=e, density=DENSITY_G_PER_CM3,
                           drift_field=FIELD_V_PER_CM)
        print(f"{name},{e:.6g},{y.PhotonYield:.6g},{y.ElectronYield:.6g}")
