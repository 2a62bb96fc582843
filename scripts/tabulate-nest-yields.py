#!/usr/bin/env python3
"""Tabulate NEST's yields for the simulator (src/sim/nest-yields.csv).

Run once, in a virtual environment with nestpy:

    python3 -m venv /tmp/nestvenv && /tmp/nestvenv/bin/pip install nestpy==2.1.3
    /tmp/nestvenv/bin/python scripts/tabulate-nest-yields.py > src/sim/nest-yields.csv
    /tmp/nestvenv/bin/python scripts/tabulate-nest-yields.py --check > src/sim/nest-check.csv

Means of NEST's GetYields (no fluctuations) for the beta model (ER) and
nuclear recoils, at the drift field and liquid density of conditions v1,
and the rms of the electron count with NEST's fluctuations (GetQuanta:
Fano, binomial exciton/ion split, recombination fluctuations), from 20000
seeded draws per energy (relative statistical error 0.5 %):
20 energies per decade from 0.5 to 220 keV (the simulator's table), or with
--check every integer keV from 1 to 50 (what the simulator's drawn quanta
are tested against, at energies between the table's rows).
"""
import math
import sys

import nestpy

FIELD_V_PER_CM = 96.5
DENSITY_G_PER_CM3 = 2.888
DRAWS = 20000

nestpy.RandomGen.rndm().set_seed(20261204)
calc = nestpy.NESTcalc(nestpy.detectors.VDetector())
print(f"# NEST (nestpy 2.1.3) yields at {FIELD_V_PER_CM} V/cm, {DENSITY_G_PER_CM3} g/cm3: "
      f"scripts/tabulate-nest-yields.py {' '.join(sys.argv[1:])}")
print("recoil,energy_kev,photons,electrons,electrons_rms")
if "--check" in sys.argv[1:]:
    energies = [float(k) for k in range(1, 51)]
else:
    energies = [0.5 * 10 ** (k / 20) for k in range(0, 54)]
for name, interaction in [("er", nestpy.interactions.beta), ("nr", nestpy.interactions.NR)]:
    for e in energies:
        y = calc.GetYields(interaction=interaction, energy=e, density=DENSITY_G_PER_CM3,
                           drift_field=FIELD_V_PER_CM)
        s = s2 = 0.0
        for _ in range(DRAWS):
            n = calc.GetQuanta(y, DENSITY_G_PER_CM3).electrons
            s += n
            s2 += n * n
        rms = math.sqrt(max(s2 / DRAWS - (s / DRAWS) ** 2, 0.0))
        print(f"{name},{e:.6g},{y.PhotonYield:.6g},{y.ElectronYield:.6g},{rms:.4g}")
