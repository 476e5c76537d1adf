"""Write /tmp/ux_audit_lazy.npy: 128x128 scan x 128x128 detector uint16 (512 MiB), a BF disk
whose intensity and position vary across the scan, plus rings, plus cycled noise."""
import numpy as np
n, k = 128, 128
yy, xx = np.mgrid[:k, :k]
rng = np.random.default_rng(7)
noise = rng.poisson(3.0, size=(16, k, k)).astype(np.uint16)
mm = np.lib.format.open_memmap("/tmp/ux_audit_lazy.npy", mode="w+", dtype=np.uint16, shape=(n, n, k, k))
for iy in range(n):
    row = np.empty((n, k, k), np.uint16)
    for ix in range(n):
        cy = 64 + 2 * np.sin(iy / 20); cx = 64 + 2 * np.cos(ix / 17)
        r = np.hypot(yy - cy, xx - cx)
        grain = 1.0 + 0.5 * np.sin(iy / 9.0) * np.cos(ix / 7.0)
        p = 200 * (r < 10) * grain + 20 * (np.abs(r - 35) < 2) * (2 - grain)
        row[ix] = p.astype(np.uint16) + noise[(iy * n + ix) % 16]
    mm[iy] = row
mm.flush()
print("ok")
