"""Triton kernels of the LayerConnect connector, v2 (SPEC.md §2-§5).

Notation (SPEC §2-§4): x (N, d) row-major, g = d/r, z = D(x) (N, r) the mean over g consecutive
channels, S = h0 Theta[k0] + h1 Theta[k1] (the at most two anchors with a non-zero hat weight),
W = A S B^T (r x d) with A (r x p), B (d x q) the align-corners interpolation matrices,
y = x + alpha (z W + b). ``R_PAD`` is r rounded up to a power of two >= 16 (what ``tl.dot`` needs).

Five kernels, one job each:

    build_weights_kernel          W for every connector position (and task) at once: the only kernel
                                  that reads Theta or does interpolation arithmetic
    connector_fwd_kernel          y (and z when gradients are needed) from x and the prebuilt W
    connector_bwd_dx_kernel       dx = dy + (alpha/g) U(dy W^T) from dy and the prebuilt W
    connector_bwd_partial_kernel  split-K partials of z^T dy and sum_n dy into fixed slots
    connector_bwd_reduce_kernel   ordered sum of the partials, interpolation adjoint, hat weights

Precision (``DOT``): 0 = float16/bfloat16 operands on the tensor cores with float32 accumulation (z, v
and dy are rounded to the input dtype first, as eager PyTorch would); 1 = ``ieee``: float32 operands
on CUDA-core FMA, float64 on DMMA (sm_80+). For float32 ``ieee`` keeps exactly the error of eager
PyTorch's (non-TF32) float32 matmul; ``tf32x3`` (about 2^-22 relative error per product, also within
the bound) was compiled and rejected: at K = r_pad = 128 its split operands spill on sm_90 (255
registers, 100-1500 spilled bytes per thread at every block size tried), and float32 is not the speed
target (bf16 is). Sums (pooling, accumulators, epilogues) run in float32, or float64 for float64
inputs. Scalars that need float64 accuracy arrive as a float32 pair (hi, lo) and are recombined only
in float64 kernels, so float16/bfloat16/float32 kernels contain no float64 instruction.

Hot loops (forward, dx, partials) hold no integer division (g is a compile-time constant: shifts or
a multiply-high) and no float64 arithmetic for non-float64 inputs. Program ids are cast to int64
before they are multiplied by a stride, so N*d may exceed 2**31.

Multi-task (SPEC §6): with ``HAS_IDS`` row n uses W[ids[n]], bias[ids[n]]. A program finds the range
[tlo, thi] of task ids among its rows and, for each task present, multiplies its block with that
task's W tile and keeps the result on that task's rows (a select on the accumulator). Batches keep a
sequence's tokens together, so a row block almost always holds one or two tasks; without
``HAS_IDS`` there is no id traffic and no select.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _dot(a, b, DOT: tl.constexpr):
    """a @ b: half operands on the tensor cores accumulated in float32 (DOT = 0), else exact IEEE
    products in the operands' dtype (DOT = 1)."""
    if DOT == 0:
        return tl.dot(a, b, out_dtype=tl.float32)
    else:
        return tl.dot(a, b, input_precision="ieee")


@triton.jit
def _scalar(hi, lo, CDT: tl.constexpr):
    """A host scalar passed as a float32 pair (hi + lo): exact to ~2^-48 in float64 kernels, and plain
    float32 (no float64 instruction) otherwise."""
    if CDT == tl.float64:  # (tl.full, not .to: the interpreter passes Python floats)
        return tl.full((), hi, tl.float64) + tl.full((), lo, tl.float64)
    else:
        return tl.full((), hi, tl.float32)


@triton.jit
def _div(a, b, CDT: tl.constexpr):
    """a / b correctly rounded in CDT (float32 division is otherwise approximate on GPUs)."""
    if CDT == tl.float64:
        return a.to(tl.float64) / b.to(tl.float64)
    else:
        return tl.math.div_rn(a.to(tl.float32), b.to(tl.float32))


@triton.jit
def _task_range(ids_ptr, rows, rmask):
    """Each row's task id (int32: T is small, so id * d offsets stay 32-bit) and their range."""
    tid = tl.load(ids_ptr + rows, mask=rmask, other=0).to(tl.int32)
    tlo = tl.min(tl.where(rmask, tid, 2147483647))
    thi = tl.max(tl.where(rmask, tid, -1))
    return tid, tlo, thi


# -------------------------------------------------------------------------------------------------
# pooling: z = D(x) for a block of rows
# -------------------------------------------------------------------------------------------------
@triton.jit
def _pool_slab(
    x_ptr,
    row_off,
    rmask,
    i0,
    r,
    G: tl.constexpr,
    RC: tl.constexpr,
    GC: tl.constexpr,
    BN: tl.constexpr,
    CDT: tl.constexpr,
):
    """Sums (not yet means) of the channel groups i0 .. i0+RC-1 of each row: (BN, RC) in CDT, 0 for
    groups >= r. The slab is loaded as a (BN, RC*GC) tile and reduced through its (BN, RC, GC) view:
    when GC = g a slab is one contiguous run of RC*g channels per row (16-byte loads)."""
    e = tl.arange(0, RC * GC)
    if GC == G:
        cols = i0 * G + e
        m = rmask[:, None] & (cols < r * G)[None, :]
        xs = tl.load(x_ptr + row_off[:, None] + cols[None, :], mask=m, other=0.0)
        s = tl.sum(tl.reshape(xs.to(CDT), (BN, RC, GC)), axis=2)
    elif (RC == 1) and (G % GC == 0):  # a group wider than a slab (g = k * GC): contiguous runs of GC
        s = tl.zeros((BN, RC), CDT)
        gm = rmask[:, None] & (i0 + tl.zeros_like(e) < r)[None, :]
        for j0 in range(0, G, GC):
            cols = i0 * G + j0 + e
            xs = tl.load(x_ptr + row_off[:, None] + cols[None, :], mask=gm, other=0.0)
            s += tl.sum(tl.reshape(xs.to(CDT), (BN, RC, GC)), axis=2)
    else:  # any other g: GC lanes per group and step, the tail masked
        s = tl.zeros((BN, RC), CDT)
        grp = i0 + e // GC
        lane = e % GC
        for j0 in range(0, G, GC):
            jj = j0 + lane
            cols = grp * G + jj
            m = rmask[:, None] & ((grp < r) & (jj < G))[None, :]
            xs = tl.load(x_ptr + row_off[:, None] + cols[None, :], mask=m, other=0.0)
            s += tl.sum(tl.reshape(xs.to(CDT), (BN, RC, GC)), axis=2)
    return s


@triton.jit
def _pool(
    x_ptr,
    row_off,
    rmask,
    i0,
    r,
    G: tl.constexpr,
    RK: tl.constexpr,
    RC: tl.constexpr,
    GC: tl.constexpr,
    BN: tl.constexpr,
    CDT: tl.constexpr,
):
    """z[:, i0:i0+RK] = D(x) for the rows at ``row_off``: (BN, RK) in CDT, 0 for groups >= r.

    Slabs of RC groups keep the loaded tile small (no spills); the RK/RC slab sums are placed into a
    (BN, RK/RC, RC) register tensor by a select per slab, which the final reshape turns into z. (A
    statically unrolled loop was tried: it compiled to 233-255 registers with spills on sm_90.)"""
    NC: tl.constexpr = RK // RC
    if NC == 1:
        z = _pool_slab(x_ptr, row_off, rmask, i0, r, G, RC, GC, BN, CDT)
    else:
        cid = tl.arange(0, NC)
        z3 = tl.zeros((BN, NC, RC), CDT)
        for c in range(NC):
            zc = _pool_slab(x_ptr, row_off, rmask, i0 + c * RC, r, G, RC, GC, BN, CDT)
            z3 = tl.where((cid == c)[None, :, None], zc[:, None, :], z3)
        z = tl.reshape(z3, (BN, RK))
    return z / G


@triton.jit
def _zw(
    zop, w_ptr, i0, ii, cols, r, d, tid, tlo, thi, rmask, R_PAD: tl.constexpr, HAS_IDS: tl.constexpr, DOT: tl.constexpr
):
    """z[:, chunk] @ W[chunk, cols] for this block's rows (each row with its own task's W). With task
    ids the product runs once per task present and each row keeps its own task's result (a select on
    the accumulator: no masked copy of z)."""
    ri = i0 + ii
    wm = (ri < r)[:, None] & (cols < d)[None, :]  # rows >= r are zero in W: not even read
    woff = ri[:, None] * d + cols[None, :]
    if HAS_IDS:
        acc = tl.zeros((zop.shape[0], cols.shape[0]), tl.float64 if zop.dtype == tl.float64 else tl.float32)
        for tau in range(tlo, thi + 1):
            sel = rmask & (tid == tau)
            if tl.sum(sel.to(tl.int32)) > 0:
                w = tl.load(w_ptr + tl.cast(tau, tl.int64) * (R_PAD * d) + woff, mask=wm, other=0.0)
                acc = tl.where(sel[:, None], _dot(zop, w, DOT), acc)  # each row has one task
    else:
        w = tl.load(w_ptr + woff, mask=wm, other=0.0)
        acc = _dot(zop, w, DOT)
    return acc


# -------------------------------------------------------------------------------------------------
# W build: all connector positions (and tasks) in one launch
# -------------------------------------------------------------------------------------------------
# Grid (P*T) x (R_PAD / BR) x (d / BD). Program (l*T + tau, bi, bj) writes the (BR x BD) tile of
# W[l, tau] (rows >= r are written as zeros): 4 gathered Theta loads per element (8 when t falls
# between two anchors), integer-exact interpolation neighbours (lo = i (p-1) // (r-1)), weights
# rem/den rounded once in the compute dtype. Memory: reads Theta (L2-resident), writes P*T*R_PAD*d
# elements of the activation dtype, once per step.
@triton.jit
def build_weights_kernel(
    th_ptr,
    hk_ptr,
    hw_ptr,
    w_ptr,
    T,
    K,
    p,
    q,
    r,
    d,
    den_r,
    den_d,
    R_PAD: tl.constexpr,
    BR: tl.constexpr,
    BD: tl.constexpr,
):
    CDT: tl.constexpr = th_ptr.dtype.element_ty
    pid = tl.program_id(0)
    pos = pid // T
    tau = pid % T
    offs_i = tl.program_id(1) * BR + tl.arange(0, BR)
    offs_j = tl.program_id(2) * BD + tl.arange(0, BD)
    k0 = tl.load(hk_ptr + 2 * pos)
    k1 = tl.load(hk_ptr + 2 * pos + 1)
    h0 = tl.load(hw_ptr + 2 * pos)
    h1 = tl.load(hw_ptr + 2 * pos + 1)
    # align-corners neighbours: integer-exact, as reference.interp_positions
    nu = offs_i * (p - 1)
    ulo = nu // den_r
    fu = _div(nu - ulo * den_r, den_r, CDT)
    uhi = tl.minimum(ulo + 1, p - 1)
    nv = offs_j * (q - 1)
    vlo = nv // den_d
    fv = _div(nv - vlo * den_d, den_d, CDT)
    vhi = tl.minimum(vlo + 1, q - 1)
    wulo = (1.0 - fu)[:, None]
    wuhi = fu[:, None]
    wvlo = (1.0 - fv)[None, :]
    wvhi = fv[None, :]
    m = (offs_i < r)[:, None] & (offs_j < d)[None, :]
    o_ll = ulo[:, None] * q + vlo[None, :]
    o_lh = ulo[:, None] * q + vhi[None, :]
    o_hl = uhi[:, None] * q + vlo[None, :]
    o_hh = uhi[:, None] * q + vhi[None, :]
    th = th_ptr + tau.to(tl.int64) * K * p * q
    pa = th + k0 * p * q
    s_ll = h0 * tl.load(pa + o_ll, mask=m, other=0.0)
    s_lh = h0 * tl.load(pa + o_lh, mask=m, other=0.0)
    s_hl = h0 * tl.load(pa + o_hl, mask=m, other=0.0)
    s_hh = h0 * tl.load(pa + o_hh, mask=m, other=0.0)
    if h1 != 0.0:
        pb = th + k1 * p * q
        s_ll += h1 * tl.load(pb + o_ll, mask=m, other=0.0)
        s_lh += h1 * tl.load(pb + o_lh, mask=m, other=0.0)
        s_hl += h1 * tl.load(pb + o_hl, mask=m, other=0.0)
        s_hh += h1 * tl.load(pb + o_hh, mask=m, other=0.0)
    # the order of the sums matches (A @ S) @ B^T
    w = wvlo * (wulo * s_ll + wuhi * s_hl) + wvhi * (wulo * s_lh + wuhi * s_hh)
    w = tl.where(m, w, 0.0)
    out = (pid.to(tl.int64) * R_PAD + offs_i[:, None]) * d + offs_j[None, :]
    tl.store(w_ptr + out, w.to(w_ptr.dtype.element_ty), mask=(offs_i < R_PAD)[:, None] & (offs_j < d)[None, :])


# -------------------------------------------------------------------------------------------------
# forward
# -------------------------------------------------------------------------------------------------
# Tiling: one program per BN rows. With RK = R_PAD (r <= 128 after padding: every SPEC default up
# to d = 1024) the program pools its rows into z (BN x R_PAD) once, through (rows, RC, g) slabs of
# x (16-byte loads, CDT sums), stores z when gradients are needed, and keeps z in registers while it
# loops over BD-column chunks: acc = z @ W[:, chunk] on the tensor cores, then y = x + alpha (acc + b)
# with the chunk of x re-read (an L2 hit: the program read it while pooling). With larger r
# (RK < R_PAD, e.g. d = 4096) z does not fit in registers: the program pools all its RK-chunks of z
# into z_ptr first (the saved z, or a scratch buffer), waits at a CTA barrier, then re-reads the
# chunks of z (L1/L2, 1/g of the x bytes) for every column chunk. Either way every row is pooled
# completely before any of it is written, so y may alias x (in-place inference).
# Memory traffic: x read from DRAM once, y written once, z (N x r) written once when SAVE_Z (or when
# RK < R_PAD), W (R_PAD x d, rows < r only) read from L2 once per program; nothing else.
@triton.jit
def connector_fwd_kernel(
    x_ptr,
    w_ptr,
    b_ptr,
    ids_ptr,
    y_ptr,
    z_ptr,
    N,
    d,
    r,
    NB,
    ALPHA_HI,
    ALPHA_LO,
    G: tl.constexpr,
    R_PAD: tl.constexpr,
    RK: tl.constexpr,
    RC: tl.constexpr,
    GC: tl.constexpr,
    HAS_IDS: tl.constexpr,
    SAVE_Z: tl.constexpr,
    DOT: tl.constexpr,
    BN: tl.constexpr,
    BD: tl.constexpr,
):
    CDT: tl.constexpr = b_ptr.dtype.element_ty
    ODT: tl.constexpr = x_ptr.dtype.element_ty if DOT == 0 else CDT
    pid = tl.program_id(0).to(tl.int64)
    rows = pid * BN + tl.arange(0, BN)
    rmask = rows < N
    row_off = rows * d
    ii = tl.arange(0, RK)
    alpha = _scalar(ALPHA_HI, ALPHA_LO, CDT)
    if HAS_IDS:
        tid, tlo, thi = _task_range(ids_ptr, rows, rmask)
    else:
        tid = rows
        tlo = 0
        thi = 0
    zo = rows[:, None] * r + ii[None, :]
    if RK == R_PAD:
        z = _pool(x_ptr, row_off, rmask, 0, r, G, RK, RC, GC, BN, CDT)
        if SAVE_Z:
            tl.store(z_ptr + zo, z.to(z_ptr.dtype.element_ty), mask=rmask[:, None] & (ii < r)[None, :])
        zop = z.to(ODT)
    else:
        for i0 in range(0, r, RK):
            zc = _pool(x_ptr, row_off, rmask, i0, r, G, RK, RC, GC, BN, CDT)
            tl.store(z_ptr + zo + i0, zc.to(z_ptr.dtype.element_ty), mask=rmask[:, None] & (i0 + ii < r)[None, :])
        tl.debug_barrier()  # the chunks of z this CTA wrote are read back by other threads of it
    for c0 in range(0, d, BD):
        cols = c0 + tl.arange(0, BD)
        if RK == R_PAD:
            acc = _zw(zop, w_ptr, 0, ii, cols, r, d, tid, tlo, thi, rmask, R_PAD, HAS_IDS, DOT)
        else:
            acc = tl.zeros((BN, BD), CDT)
            for i0 in range(0, r, RK):
                zc = tl.load(z_ptr + zo + i0, mask=rmask[:, None] & (i0 + ii < r)[None, :], other=0.0)
                acc += _zw(zc.to(ODT), w_ptr, i0, ii, cols, r, d, tid, tlo, thi, rmask, R_PAD, HAS_IDS, DOT)
        m2 = rmask[:, None] & (cols < d)[None, :]
        if HAS_IDS:
            bt = tl.load(b_ptr + tid[:, None] * d + cols[None, :], mask=m2, other=0.0)
        else:
            bt = tl.load(b_ptr + cols, mask=cols < d, other=0.0)[None, :]
        xo = row_off[:, None] + cols[None, :]
        xt = tl.load(x_ptr + xo, mask=m2, other=0.0).to(CDT)
        yt = xt + alpha * (acc + bt)
        tl.store(y_ptr + xo, yt.to(y_ptr.dtype.element_ty), mask=m2)


# -------------------------------------------------------------------------------------------------
# backward dx = dy + (alpha/g) U(dy W^T)
# -------------------------------------------------------------------------------------------------
# Tiling: one program per BN rows. v = dy W^T (BN x RK) accumulates on the tensor cores over
# BD-column chunks of dy and W; then a second sweep re-reads the chunks of dy (L2 hits) and writes
# dx = dy + (alpha/g) v[:, c // g], the spread done by a register gather along v's columns. With
# RK = R_PAD (SPEC defaults up to d = 1024) that is one pass; larger r takes one pass per RK-chunk
# of r, each writing the g*RK columns it feeds. Memory traffic: dy read from DRAM once, dx written
# once, W from L2.
@triton.jit
def connector_bwd_dx_kernel(
    dy_ptr,
    w_ptr,
    ids_ptr,
    dx_ptr,
    N,
    d,
    r,
    NB,
    SCALE_HI,
    SCALE_LO,
    G: tl.constexpr,
    R_PAD: tl.constexpr,
    RK: tl.constexpr,
    HAS_IDS: tl.constexpr,
    DOT: tl.constexpr,
    BN: tl.constexpr,
    BD: tl.constexpr,
):
    CDT: tl.constexpr = tl.float64 if dy_ptr.dtype.element_ty == tl.float64 else tl.float32
    ODT: tl.constexpr = dy_ptr.dtype.element_ty if DOT == 0 else CDT
    pid = tl.program_id(0).to(tl.int64)
    rows = pid * BN + tl.arange(0, BN)
    rmask = rows < N
    row_off = rows * d
    ii = tl.arange(0, RK)
    scale = _scalar(SCALE_HI, SCALE_LO, CDT)
    if HAS_IDS:
        tid, tlo, thi = _task_range(ids_ptr, rows, rmask)
    for i0 in range(0, r, RK):
        ri = i0 + ii
        v = tl.zeros((BN, RK), CDT)
        for c0 in range(0, d, BD):
            cols = c0 + tl.arange(0, BD)
            cm = cols < d
            dyt = tl.load(dy_ptr + row_off[:, None] + cols[None, :], mask=rmask[:, None] & cm[None, :], other=0.0)
            dyt = dyt.to(ODT)
            wm = (ri < r)[:, None] & cm[None, :]
            woff = ri[:, None] * d + cols[None, :]
            if HAS_IDS:
                for tau in range(tlo, thi + 1):
                    sel = rmask & (tid == tau)
                    if tl.sum(sel.to(tl.int32)) > 0:
                        w = tl.load(w_ptr + tl.cast(tau, tl.int64) * (R_PAD * d) + woff, mask=wm, other=0.0)
                        v += tl.where(sel[:, None], _dot(dyt, tl.trans(w), DOT), 0.0)
            else:
                w = tl.load(w_ptr + woff, mask=wm, other=0.0)
                v += _dot(dyt, tl.trans(w), DOT)
        v = v * scale
        g0 = i0 * G
        c_end = tl.minimum(g0 + RK * G, d)
        for c0 in range(g0, c_end, BD):
            cols = c0 + tl.arange(0, BD)
            cm = cols < c_end
            grp = tl.minimum((cols - g0) // G, RK - 1)  # G is a constant: a shift or multiply-high
            vs = tl.gather(v, tl.broadcast_to(grp[None, :], (BN, BD)), axis=1)
            m2 = rmask[:, None] & cm[None, :]
            xo = row_off[:, None] + cols[None, :]
            dyt = tl.load(dy_ptr + xo, mask=m2, other=0.0).to(CDT)
            tl.store(dx_ptr + xo, (dyt + vs).to(dx_ptr.dtype.element_ty), mask=m2)


# -------------------------------------------------------------------------------------------------
# backward dTheta, db: launch 1 of 2 (split-K partial sums, fixed slots, no atomics)
# -------------------------------------------------------------------------------------------------
# Grid (d / BD) x (R_PAD / RK) x S; the column block varies fastest so that the programs of one split,
# which read the same rows of z, run side by side (z is read from DRAM about once). Program
# (cb, ci, s) owns the (RK x BD) block of G_s = z_s^T dy_s and, for ci = 0, the BD slice of
# sum_n dy_s, for each task present in split s (RPS consecutive rows); it accumulates over BN-row
# tiles in a fixed order on the tensor cores and writes its own slot (bitwise deterministic). z comes
# from the forward (FROM_X = False, N x r in the activation dtype) or is pooled here from x (rounded
# to the same dtype, so both give the same bits). Memory traffic: dy read once, z read once (or x
# once per column block), partials S*T*r*d + S*T*d written; S is chosen so they stay small.
@triton.jit
def connector_bwd_partial_kernel(
    src_ptr,
    dy_ptr,
    ids_ptr,
    pw_ptr,
    pb_ptr,
    rng_ptr,
    N,
    d,
    r,
    T,
    RPS,
    G: tl.constexpr,
    R_PAD: tl.constexpr,
    RK: tl.constexpr,
    RC: tl.constexpr,
    GC: tl.constexpr,
    FROM_X: tl.constexpr,
    HAS_IDS: tl.constexpr,
    DOT: tl.constexpr,
    BN: tl.constexpr,
    BD: tl.constexpr,
):
    CDT: tl.constexpr = pw_ptr.dtype.element_ty
    ODT: tl.constexpr = dy_ptr.dtype.element_ty if DOT == 0 else CDT
    cb = tl.program_id(0)
    ci = tl.program_id(1)
    s = tl.program_id(2).to(tl.int64)
    n_start = s * RPS
    n_end = tl.minimum(n_start + RPS, N)
    i0 = ci * RK
    ri = i0 + tl.arange(0, RK)
    cols = cb * BD + tl.arange(0, BD)
    cm = cols < d
    offs_n = tl.arange(0, BN)
    if HAS_IDS:
        tlo = tl.full((), 1 << 40, tl.int64)
        thi = tl.full((), -1, tl.int64)
        for n0 in range(n_start, n_end, BN):
            rows = n0 + offs_n
            _, a, b = _task_range(ids_ptr, rows, rows < n_end)
            tlo = tl.minimum(tlo, a)
            thi = tl.maximum(thi, b)
        if (cb == 0) & (ci == 0):
            tl.store(rng_ptr + 2 * s, tlo)
            tl.store(rng_ptr + 2 * s + 1, thi)
    else:
        tlo = tl.full((), 0, tl.int64)
        thi = tl.full((), 0, tl.int64)
    for tau in range(tlo, thi + 1):
        acc = tl.zeros((RK, BD), CDT)
        accb = tl.zeros((BD,), CDT)
        for n0 in range(n_start, n_end, BN):
            rows = n0 + offs_n
            sel = rows < n_end
            if HAS_IDS:
                tid = tl.load(ids_ptr + rows, mask=sel, other=-1)
                sel = sel & (tid == tau)
            if FROM_X:
                z = _pool(src_ptr, rows * d, sel, i0, r, G, RK, RC, GC, BN, CDT).to(dy_ptr.dtype.element_ty)
            else:
                z = tl.load(src_ptr + rows[:, None] * r + ri[None, :], mask=sel[:, None] & (ri < r)[None, :], other=0.0)
            dyt = tl.load(dy_ptr + rows[:, None] * d + cols[None, :], mask=sel[:, None] & cm[None, :], other=0.0)
            acc += _dot(tl.trans(z.to(ODT)), dyt.to(ODT), DOT)
            if ci == 0:
                accb += tl.sum(dyt.to(CDT), axis=0)
        slot = s * T + tau
        tl.store(pw_ptr + (slot * r + ri[:, None]) * d + cols[None, :], acc, mask=(ri < r)[:, None] & cm[None, :])
        if ci == 0:
            tl.store(pb_ptr + slot * d + cols, accb, mask=cm)


# -------------------------------------------------------------------------------------------------
# backward dTheta, db: launch 2 of 2 (fixed-order reduction + interpolation adjoint)
# -------------------------------------------------------------------------------------------------
# Grid T x (p / BP) x (q / BQ). Program (tau, a, b) computes the (BP x BQ) block of
# dS = A^T G B, G = sum_s G_s summed over the splits in index order (deterministic), with the A^T
# and B tiles rebuilt from integer positions. A and B are banded, so only the (row, column) chunks of
# G whose interpolation neighbours fall in this block are read: the partials are read about once in
# all. It writes dTheta[tau, k] = alpha h_k dS for every k (zeros where h_k = 0); the programs with
# a = 0 also write their DB_CH columns of db[tau] = alpha sum_s b_s. Splits whose task range excludes
# tau are skipped (their slots for tau were never written).
@triton.jit
def _interp_w(offs, n_in, den, CDT: tl.constexpr):
    num = offs * (n_in - 1)
    lo = num // den
    frac = _div(num - lo * den, den, CDT)
    hi = tl.minimum(lo + 1, n_in - 1)
    return lo, hi, 1.0 - frac, frac


@triton.jit
def connector_bwd_reduce_kernel(
    pw_ptr,
    pb_ptr,
    rng_ptr,
    dth_ptr,
    db_ptr,
    S,
    T,
    d,
    r,
    p,
    q,
    K,
    den_r,
    den_d,
    K0,
    K1,
    DB_CH,
    H0_HI,
    H0_LO,
    H1_HI,
    H1_LO,
    ALPHA_HI,
    ALPHA_LO,
    HAS_IDS: tl.constexpr,
    BP: tl.constexpr,
    BQ: tl.constexpr,
    BR: tl.constexpr,
    BD: tl.constexpr,
):
    CDT: tl.constexpr = pw_ptr.dtype.element_ty
    tau = tl.program_id(0).to(tl.int64)
    pa = tl.program_id(1)
    qb = tl.program_id(2)
    a0 = pa * BP
    b0 = qb * BQ
    offs_a = a0 + tl.arange(0, BP)
    offs_b = b0 + tl.arange(0, BQ)
    acc = tl.zeros((BP, BQ), CDT)
    for c0 in range(0, d, BD):
        # B is banded: columns c0..c_last only touch seed columns [lo(c0), hi(c_last)]
        c_last = tl.minimum(c0 + BD, d) - 1
        if (tl.minimum((c_last * (q - 1)) // den_d + 1, q - 1) >= b0) & ((c0 * (q - 1)) // den_d < b0 + BQ):
            offs_j = c0 + tl.arange(0, BD)
            jmask = offs_j < d
            vlo, vhi, wvlo, wvhi = _interp_w(offs_j, q, den_d, CDT)
            bt = tl.where(vlo[:, None] == offs_b[None, :], wvlo[:, None], 0.0) + tl.where(
                vhi[:, None] == offs_b[None, :], wvhi[:, None], 0.0
            )
            bt = tl.where(jmask[:, None], bt, 0.0)
            for i0 in range(0, r, BR):
                i_last = tl.minimum(i0 + BR, r) - 1
                if (tl.minimum((i_last * (p - 1)) // den_r + 1, p - 1) >= a0) & ((i0 * (p - 1)) // den_r < a0 + BP):
                    offs_i = i0 + tl.arange(0, BR)
                    imask = offs_i < r
                    m2 = imask[:, None] & jmask[None, :]
                    gt = tl.zeros((BR, BD), CDT)
                    for s in range(0, S):
                        s64 = tl.cast(s, tl.int64)
                        use = True
                        if HAS_IDS:
                            use = (tl.load(rng_ptr + 2 * s64) <= tau) & (tl.load(rng_ptr + 2 * s64 + 1) >= tau)
                        if use:
                            po = ((s64 * T + tau) * r + offs_i[:, None]) * d + offs_j[None, :]
                            gt += tl.load(pw_ptr + po, mask=m2, other=0.0)
                    ulo, uhi, wulo, wuhi = _interp_w(offs_i, p, den_r, CDT)
                    at = tl.where(offs_a[:, None] == ulo[None, :], wulo[None, :], 0.0) + tl.where(
                        offs_a[:, None] == uhi[None, :], wuhi[None, :], 0.0
                    )
                    at = tl.where(imask[None, :], at, 0.0)
                    gb = tl.dot(gt, bt, input_precision="ieee")
                    acc += tl.dot(at, gb, input_precision="ieee")
    alpha = _scalar(ALPHA_HI, ALPHA_LO, CDT)
    acc = alpha * acc
    om = (offs_a < p)[:, None] & (offs_b < q)[None, :]
    h0 = _scalar(H0_HI, H0_LO, CDT)
    h1 = _scalar(H1_HI, H1_LO, CDT)
    for k in range(0, K):
        dk = tl.zeros((BP, BQ), CDT)
        if k == K0:
            dk = h0 * acc
        if k == K1:
            dk += h1 * acc  # h1 = 0 and K1 = K0 when a single anchor is active: adds exact zeros
        o = ((tau * K + k) * p + offs_a[:, None]) * q + offs_b[None, :]
        tl.store(dth_ptr + o, dk, mask=om)
    if pa == 0:
        c_hi = tl.minimum((qb + 1) * DB_CH, d)
        for c0 in range(qb * DB_CH, c_hi, BD):
            offs_j = c0 + tl.arange(0, BD)
            jmask = offs_j < c_hi
            bsum = tl.zeros((BD,), CDT)
            for s in range(0, S):
                s64 = tl.cast(s, tl.int64)
                use = True
                if HAS_IDS:
                    use = (tl.load(rng_ptr + 2 * s64) <= tau) & (tl.load(rng_ptr + 2 * s64 + 1) >= tau)
                if use:
                    bsum += tl.load(pb_ptr + (s64 * T + tau) * d + offs_j, mask=jmask, other=0.0)
            tl.store(db_ptr + tau * d + offs_j, alpha * bsum, mask=jmask)
