"""The Triton programs of the fused attention (FlashAttention-2, Dao 2023): the forward kernel, the
backward's preprocessing, dK/dV and dQ kernels, and the pieces they share (tile loads, masks and
biases, the key/query ranges a block visits). `kernels.attention` holds the launchers, the autograd
function, the checks and the public API, and explains the design.
"""

import triton
import triton.language as tl

# ---------------------------------------------------------------------------------------------
# Shared pieces of the kernels
# ---------------------------------------------------------------------------------------------


@triton.jit
def _load_tile(base, rows, stride_row, n_rows, HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr,
               CHECK_ROWS: tl.constexpr):
    """A (len(rows), D_PAD) tile of a (S, HEAD_DIM) matrix; padded head-dim columns read as 0."""
    cols = tl.arange(0, D_PAD)
    ptrs = base + rows[:, None] * stride_row + cols[None, :]
    if CHECK_ROWS:
        if HEAD_DIM == D_PAD:
            x = tl.load(ptrs, mask=rows[:, None] < n_rows, other=0.0)
        else:
            x = tl.load(ptrs, mask=(rows[:, None] < n_rows) & (cols[None, :] < HEAD_DIM), other=0.0)
    else:
        if HEAD_DIM == D_PAD:
            x = tl.load(ptrs)
        else:
            x = tl.load(ptrs, mask=cols[None, :] < HEAD_DIM, other=0.0)
    return x


@triton.jit
def _store_tile(base, x, rows, stride_row, n_rows, HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr):
    cols = tl.arange(0, D_PAD)
    mask = (rows[:, None] < n_rows) & (cols[None, :] < HEAD_DIM)
    tl.store(base + rows[:, None] * stride_row + cols[None, :], x.to(base.dtype.element_ty), mask=mask)


@triton.jit
def _load_vec(base, rows, n_rows, other, CHECK_ROWS: tl.constexpr):
    if CHECK_ROWS:
        x = tl.load(base + rows, mask=rows < n_rows, other=other)
    else:
        x = tl.load(base + rows)
    return x


@triton.jit
def _load_seg(seg_base, idx, n, other, HAS_SEG: tl.constexpr):
    """Segment ids at positions `idx` (`other` past n); `idx` itself (unused) without segments."""
    seg = idx
    if HAS_SEG:
        seg = tl.load(seg_base + idx, mask=(idx >= 0) & (idx < n), other=other)
    return seg


@triton.jit
def _bias_and_mask(s, qi, kj, kpm, qseg, kseg, Sk, pos_off, window, slope2, t5_row, t5_L,
                   GEOMETRY: tl.constexpr, CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr,
                   HAS_KPM: tl.constexpr, HAS_ALIBI: tl.constexpr, HAS_T5: tl.constexpr, HAS_SEG: tl.constexpr):
    """Add the position biases (log2 units) to scores `s` and set hidden pairs to −inf.

    qi / kj are query / key indices broadcastable to s (either orientation), qseg / kseg their
    segment (document) ids. GEOMETRY=False is for blocks known to lie inside the causal/window/Sk
    limits, which then skip those comparisons; padding and segments are tested in every block.
    """
    if HAS_ALIBI:
        s = s - slope2 * tl.abs(kj - (qi + pos_off)).to(tl.float32)
    if HAS_T5:
        # the table holds bias[h, bucket(r)] for r in [-L, L]; beyond that the bucket is constant
        rel = tl.minimum(tl.maximum(kj - (qi + pos_off), -t5_L), t5_L)
        s = s + tl.load(t5_row + rel + t5_L)
    if GEOMETRY:
        pos = qi + pos_off
        keep = kj < Sk
        if CAUSAL:
            keep = keep & (kj <= pos)
        if HAS_WINDOW:
            keep = keep & (tl.abs(pos - kj) <= window)
        s = tl.where(keep, s, float("-inf"))
    if HAS_KPM:
        s = tl.where(kpm, s, float("-inf"))
    if HAS_SEG:
        s = tl.where(qseg == kseg, s, float("-inf"))
    return s


@triton.jit
def _round_ranges(lo, full_lo, full_hi, hi, BLOCK: tl.constexpr):
    """Snap [lo, hi) ⊇ [full_lo, full_hi) to block boundaries; the inner range only shrinks.

    Everything is clamped at 0 before dividing: integer division of negatives differs between
    compiled Triton (truncation) and Python (floor).
    """
    lo = tl.maximum(lo, 0) // BLOCK * BLOCK
    hi = tl.maximum(hi, lo)
    full_lo = tl.minimum(tl.maximum((tl.maximum(full_lo, 0) + BLOCK - 1) // BLOCK * BLOCK, lo), hi)
    full_hi = tl.maximum(tl.minimum(tl.maximum(full_hi, 0) // BLOCK * BLOCK, hi), full_lo)
    return lo, full_lo, full_hi, hi


@triton.jit
def _key_range(start_m, Sk, pos_off, window, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
               CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr):
    """Keys [lo, hi) some query of this block may see; [full_lo, full_hi) every query sees."""
    first = start_m + pos_off  # absolute position of the block's first query
    last = first + BLOCK_M - 1
    lo = first * 0
    hi = lo + Sk
    full_lo = lo
    full_hi = hi
    if CAUSAL:
        hi = tl.minimum(hi, last + 1)
        full_hi = tl.minimum(full_hi, first + 1)
    if HAS_WINDOW:
        lo = tl.maximum(lo, first - window)
        full_lo = tl.maximum(full_lo, last - window)
        if not CAUSAL:
            hi = tl.minimum(hi, last + window + 1)
            full_hi = tl.minimum(full_hi, first + window + 1)
    return _round_ranges(lo, full_lo, full_hi, hi, BLOCK_N)


@triton.jit
def _query_range(start_n, Sq, Sk, pos_off, window, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                 CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr):
    """Queries [lo, hi) that may see some key of this block; [full_lo, full_hi) see all of them."""
    first = start_n - pos_off  # the query whose position is the block's first key
    last = first + BLOCK_N - 1
    lo = first * 0
    hi = lo + Sq
    full_lo = lo
    full_hi = hi
    if CAUSAL:
        lo = tl.maximum(lo, first)
        full_lo = tl.maximum(full_lo, last)
    if HAS_WINDOW:
        hi = tl.minimum(hi, last + window + 1)
        full_hi = tl.minimum(full_hi, first + window + 1)
        if not CAUSAL:
            lo = tl.maximum(lo, first - window)
            full_lo = tl.maximum(full_lo, last - window)
    # a key block that runs past Sk needs its column mask on every query block
    full_hi = tl.where(start_n + BLOCK_N <= Sk, full_hi, 0)
    return _round_ranges(lo, full_lo, full_hi, hi, BLOCK_M)


# ---------------------------------------------------------------------------------------------
# Forward
# ---------------------------------------------------------------------------------------------


@triton.jit
def _fwd_stage(acc, m_i, l_i, q, offs_m, qseg, k_base, v_base, kpm_base, seg_base, stride_kn, stride_vn, lo, hi,
               Sk, pos_off, window, qk_scale, slope2, t5_row, t5_L,
               HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr, BLOCK_N: tl.constexpr, DOT_PREC: tl.constexpr,
               MASKED: tl.constexpr, CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr,
               HAS_KPM: tl.constexpr, HAS_ALIBI: tl.constexpr, HAS_T5: tl.constexpr, HAS_SEG: tl.constexpr):
    """Online softmax over key blocks [lo, hi) (Algorithm 1 of FlashAttention-2)."""
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        k = _load_tile(k_base, offs_n, stride_kn, Sk, HEAD_DIM, D_PAD, MASKED)
        v = _load_tile(v_base, offs_n, stride_vn, Sk, HEAD_DIM, D_PAD, MASKED)
        kpm = offs_n
        if HAS_KPM:
            kpm = tl.load(kpm_base + offs_n, mask=offs_n < Sk, other=0) != 0
        kseg = _load_seg(seg_base, offs_n, Sk, -2, HAS_SEG)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PREC) * qk_scale  # (BM, BN), log2 units
        s = _bias_and_mask(s, offs_m[:, None], offs_n[None, :], kpm[None, :], qseg[:, None], kseg[None, :], Sk,
                           pos_off, window, slope2, t5_row, t5_L, MASKED, CAUSAL, HAS_WINDOW, HAS_KPM, HAS_ALIBI,
                           HAS_T5, HAS_SEG)
        m_new = tl.maximum(m_i, tl.max(s, 1))
        # a row that has seen only hidden keys keeps m = -inf; shift by 0 so exp2 gives 0, not NaN
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.exp2(s - m_use[:, None])
        alpha = tl.exp2(m_i - m_use)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        acc = tl.dot(p.to(v.dtype), v, acc, input_precision=DOT_PREC)
        m_i = m_new
    return acc, m_i, l_i


@triton.jit
def _attn_fwd(
    Q, K, V,  # (B, H, Sq, D), (B, Hkv, Sk, D) x2; head dim contiguous
    O,  # (B, H, Sq, D) output, contiguous
    LSE,  # (B, H, Sq) fp32: log2-sum-exp2 of each row's scores, +inf for rows with no keys
    KPM,  # (B, Sk) uint8 key padding mask, 1 = attend; read only if HAS_KPM
    ALIBI,  # (H,) fp32 slopes times log2(e); read only if HAS_ALIBI
    T5REL,  # (H, 2L+1) fp32: t5_bias[h, bucket(r)]·log2(e) for r = -L..L; read only if HAS_T5
    SEG,  # (B, Sk) int32 segment (document) id of each key; query i has that of key i + pos_off; if HAS_SEG
    stride_qb, stride_qh, stride_qm, stride_kb, stride_kh, stride_kn,
    stride_vb, stride_vh, stride_vn, stride_ob, stride_oh, stride_om, stride_kpm, stride_seg,
    H, GROUP,  # query heads; query heads per key/value head
    Sq, Sk, pos_off, window,  # pos_off = Sk - Sq: query i sits at position i + pos_off
    qk_scale, t5_L,  # softmax scale times log2(e); half-width of the T5 table
    Q_BUCKET, K_BUCKET,  # powers of two >= Sq, Sk: autotune keys only, so lengths share configs
    HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr, DOT_PREC: tl.constexpr,
    CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr, HAS_KPM: tl.constexpr,
    HAS_ALIBI: tl.constexpr, HAS_T5: tl.constexpr, HAS_SEG: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = (bh // H).to(tl.int64)
    h = bh % H
    hk = (h // GROUP).to(tl.int64)
    seg_base = SEG + b * stride_seg
    q_base = Q + b * stride_qb + h.to(tl.int64) * stride_qh
    k_base = K + b * stride_kb + hk * stride_kh
    v_base = V + b * stride_vb + hk * stride_vh
    kpm_base = KPM + b * stride_kpm
    slope2 = 0.0
    if HAS_ALIBI:
        slope2 = tl.load(ALIBI + h)
    t5_row = T5REL + h * (2 * t5_L + 1)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    q = _load_tile(q_base, offs_m, stride_qm, Sq, HEAD_DIM, D_PAD, True)
    qseg = _load_seg(seg_base, offs_m + pos_off, Sk, -1, HAS_SEG)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, D_PAD], tl.float32)

    lo, full_lo, full_hi, hi = _key_range(pid_m * BLOCK_M, Sk, pos_off, window, BLOCK_M, BLOCK_N,
                                          CAUSAL, HAS_WINDOW)
    # masked edge blocks, then the mask-free interior, then masked edge blocks again
    acc, m_i, l_i = _fwd_stage(acc, m_i, l_i, q, offs_m, qseg, k_base, v_base, kpm_base, seg_base, stride_kn, stride_vn,
                               lo, full_lo, Sk, pos_off, window, qk_scale, slope2, t5_row, t5_L,
                               HEAD_DIM, D_PAD, BLOCK_N, DOT_PREC, True,
                               CAUSAL, HAS_WINDOW, HAS_KPM, HAS_ALIBI, HAS_T5, HAS_SEG)
    acc, m_i, l_i = _fwd_stage(acc, m_i, l_i, q, offs_m, qseg, k_base, v_base, kpm_base, seg_base, stride_kn, stride_vn,
                               full_lo, full_hi, Sk, pos_off, window, qk_scale, slope2, t5_row, t5_L,
                               HEAD_DIM, D_PAD, BLOCK_N, DOT_PREC, False,
                               CAUSAL, HAS_WINDOW, HAS_KPM, HAS_ALIBI, HAS_T5, HAS_SEG)
    acc, m_i, l_i = _fwd_stage(acc, m_i, l_i, q, offs_m, qseg, k_base, v_base, kpm_base, seg_base, stride_kn, stride_vn,
                               full_hi, hi, Sk, pos_off, window, qk_scale, slope2, t5_row, t5_L,
                               HEAD_DIM, D_PAD, BLOCK_N, DOT_PREC, True,
                               CAUSAL, HAS_WINDOW, HAS_KPM, HAS_ALIBI, HAS_T5, HAS_SEG)

    empty = l_i == 0.0
    l_safe = tl.where(empty, 1.0, l_i)
    o_base = O + b * stride_ob + h.to(tl.int64) * stride_oh
    _store_tile(o_base, acc / l_safe[:, None], offs_m, stride_om, Sq, HEAD_DIM, D_PAD)
    lse = tl.where(empty, float("inf"), m_i + tl.log2(l_safe))
    tl.store(LSE + bh.to(tl.int64) * Sq + offs_m, lse, mask=offs_m < Sq)


# ---------------------------------------------------------------------------------------------
# Backward
# ---------------------------------------------------------------------------------------------


@triton.jit
def _attn_bwd_preprocess(
    O, DO,  # (B, H, Sq, D) output and its gradient
    DELTA,  # (B, H, Sq) fp32 out: rowsum(dO ⊙ O), the softmax-backward correction term
    stride_ob, stride_oh, stride_om, stride_dob, stride_doh, stride_dom,
    H, Sq,
    HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr, BLOCK_M: tl.constexpr,
):
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    o = _load_tile(O + b * stride_ob + h * stride_oh, offs_m, stride_om, Sq, HEAD_DIM, D_PAD, True)
    do = _load_tile(DO + b * stride_dob + h * stride_doh, offs_m, stride_dom, Sq, HEAD_DIM, D_PAD, True)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    tl.store(DELTA + bh.to(tl.int64) * Sq + offs_m, delta, mask=offs_m < Sq)


@triton.jit
def _dkdv_stage(dk, dv, k, v, kpm, kseg, offs_n, q_base, do_base, lse_base, delta_base, seg_base, stride_qm,
                stride_dom, lo, hi, Sq, Sk, pos_off, window, qk_scale, slope2, t5_row, t5_L,
                HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr, BLOCK_M: tl.constexpr, DOT_PREC: tl.constexpr,
                MASKED: tl.constexpr, CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr,
                HAS_KPM: tl.constexpr, HAS_ALIBI: tl.constexpr, HAS_T5: tl.constexpr, HAS_SEG: tl.constexpr):
    """Accumulate dK, dV of one key block over query blocks [lo, hi) of one query head."""
    for start_m in range(lo, hi, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        q = _load_tile(q_base, offs_m, stride_qm, Sq, HEAD_DIM, D_PAD, MASKED)
        do = _load_tile(do_base, offs_m, stride_dom, Sq, HEAD_DIM, D_PAD, MASKED)
        # rows past Sq read lse = +inf, so their probabilities (and gradients) are exactly 0
        lse = _load_vec(lse_base, offs_m, Sq, float("inf"), MASKED)
        delta = _load_vec(delta_base, offs_m, Sq, 0.0, MASKED)
        qseg = _load_seg(seg_base, offs_m + pos_off, Sk, -1, HAS_SEG)
        # keys on rows, queries on columns: dK and dV then come out of untransposed dots
        s_t = tl.dot(k, tl.trans(q), input_precision=DOT_PREC) * qk_scale  # (BN, BM)
        s_t = _bias_and_mask(s_t, offs_m[None, :], offs_n[:, None], kpm[:, None], qseg[None, :], kseg[:, None], Sk,
                             pos_off, window, slope2, t5_row, t5_L, MASKED, CAUSAL, HAS_WINDOW, HAS_KPM, HAS_ALIBI,
                             HAS_T5, HAS_SEG)
        p_t = tl.exp2(s_t - lse[None, :])
        dv = tl.dot(p_t.to(do.dtype), do, dv, input_precision=DOT_PREC)
        dp_t = tl.dot(v, tl.trans(do), input_precision=DOT_PREC)
        ds_t = p_t * (dp_t - delta[None, :])
        dk = tl.dot(ds_t.to(q.dtype), q, dk, input_precision=DOT_PREC)
    return dk, dv


@triton.jit
def _attn_bwd_dkdv(
    Q, K, V, DO,  # as in the forward; DO (B, H, Sq, D) head dim contiguous
    DK, DV,  # (B, Hkv, Sk, D) out, contiguous
    LSE, DELTA,  # (B, H, Sq) fp32 from the forward / preprocess
    KPM, ALIBI, T5REL, SEG,  # as in the forward
    stride_qb, stride_qh, stride_qm, stride_kb, stride_kh, stride_kn, stride_vb, stride_vh, stride_vn,
    stride_dob, stride_doh, stride_dom, stride_dkb, stride_dkh, stride_dkn, stride_kpm, stride_seg,
    H, GROUP, Sq, Sk, pos_off, window, qk_scale, sm_scale, t5_L, Q_BUCKET, K_BUCKET,
    HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr, DOT_PREC: tl.constexpr,
    CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr, HAS_KPM: tl.constexpr,
    HAS_ALIBI: tl.constexpr, HAS_T5: tl.constexpr, HAS_SEG: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid_n = tl.program_id(0)
    bhk = tl.program_id(1)
    Hkv = H // GROUP
    b = (bhk // Hkv).to(tl.int64)
    hk = (bhk % Hkv).to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    k = _load_tile(K + b * stride_kb + hk * stride_kh, offs_n, stride_kn, Sk, HEAD_DIM, D_PAD, True)
    v = _load_tile(V + b * stride_vb + hk * stride_vh, offs_n, stride_vn, Sk, HEAD_DIM, D_PAD, True)
    lo, full_lo, full_hi, hi = _query_range(pid_n * BLOCK_N, Sq, Sk, pos_off, window, BLOCK_M, BLOCK_N,
                                            CAUSAL, HAS_WINDOW)
    kpm = offs_n
    if HAS_KPM:
        kpm = tl.load(KPM + b * stride_kpm + offs_n, mask=offs_n < Sk, other=0) != 0
        # a key block that is all padding has zero gradients: visit no query at all
        live = tl.max(kpm.to(tl.int32), 0) > 0
        full_lo = tl.where(live, full_lo, lo)
        full_hi = tl.where(live, full_hi, lo)
        hi = tl.where(live, hi, lo)
    seg_base = SEG + b * stride_seg
    kseg = _load_seg(seg_base, offs_n, Sk, -2, HAS_SEG)
    dk = tl.zeros([BLOCK_N, D_PAD], tl.float32)
    dv = tl.zeros([BLOCK_N, D_PAD], tl.float32)
    # the query heads sharing this key/value head, one after another: no atomics, no reduction pass
    for g in range(GROUP):
        h = hk * GROUP + g
        bh = b * H + h
        q_base = Q + b * stride_qb + h * stride_qh
        do_base = DO + b * stride_dob + h * stride_doh
        slope2 = 0.0
        if HAS_ALIBI:
            slope2 = tl.load(ALIBI + h)
        t5_row = T5REL + h * (2 * t5_L + 1)
        dk, dv = _dkdv_stage(dk, dv, k, v, kpm, kseg, offs_n, q_base, do_base, LSE + bh * Sq, DELTA + bh * Sq,
                             seg_base, stride_qm, stride_dom, lo, full_lo, Sq, Sk, pos_off, window, qk_scale, slope2,
                             t5_row, t5_L, HEAD_DIM, D_PAD, BLOCK_M, DOT_PREC, True,
                             CAUSAL, HAS_WINDOW, HAS_KPM, HAS_ALIBI, HAS_T5, HAS_SEG)
        dk, dv = _dkdv_stage(dk, dv, k, v, kpm, kseg, offs_n, q_base, do_base, LSE + bh * Sq, DELTA + bh * Sq,
                             seg_base, stride_qm, stride_dom, full_lo, full_hi, Sq, Sk, pos_off, window, qk_scale, slope2,
                             t5_row, t5_L, HEAD_DIM, D_PAD, BLOCK_M, DOT_PREC, False,
                             CAUSAL, HAS_WINDOW, HAS_KPM, HAS_ALIBI, HAS_T5, HAS_SEG)
        dk, dv = _dkdv_stage(dk, dv, k, v, kpm, kseg, offs_n, q_base, do_base, LSE + bh * Sq, DELTA + bh * Sq,
                             seg_base, stride_qm, stride_dom, full_hi, hi, Sq, Sk, pos_off, window, qk_scale, slope2,
                             t5_row, t5_L, HEAD_DIM, D_PAD, BLOCK_M, DOT_PREC, True,
                             CAUSAL, HAS_WINDOW, HAS_KPM, HAS_ALIBI, HAS_T5, HAS_SEG)
    dk_base = DK + b * stride_dkb + hk * stride_dkh
    dv_base = DV + b * stride_dkb + hk * stride_dkh
    _store_tile(dk_base, dk * sm_scale, offs_n, stride_dkn, Sk, HEAD_DIM, D_PAD)
    _store_tile(dv_base, dv, offs_n, stride_dkn, Sk, HEAD_DIM, D_PAD)


@triton.jit
def _t5_bucket_sums(t5g, ds, offs_m, offs_n, pos_off, t5_bucket, t5_L, NB_PAD: tl.constexpr):
    """t5g[b] += Σ dS over the tile's pairs in bucket b (dL/d table[h, b], before the batch sum)."""
    rel = tl.minimum(tl.maximum(offs_n[None, :] - (offs_m[:, None] + pos_off), -t5_L), t5_L)
    bucket = tl.load(t5_bucket + rel + t5_L)
    ids = tl.arange(0, NB_PAD)
    # buckets are monotone in |rel|: far from the diagonal a tile spans only one or two of them
    for bk in range(tl.min(bucket), tl.max(bucket) + 1):
        part = tl.sum(tl.where(bucket == bk, ds, 0.0))
        t5g += tl.where(ids == bk, part, 0.0)
    return t5g


@triton.jit
def _dq_stage(dq, t5g, q, do, lse, delta, offs_m, qseg, k_base, v_base, kpm_base, seg_base, stride_kn, stride_vn,
              lo, hi, Sk, pos_off, window, qk_scale, slope2, t5_row, t5_bucket, t5_L,
              HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr, BLOCK_N: tl.constexpr, DOT_PREC: tl.constexpr,
              NB_PAD: tl.constexpr, MASKED: tl.constexpr, CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr,
              HAS_KPM: tl.constexpr, HAS_ALIBI: tl.constexpr, HAS_T5: tl.constexpr, HAS_SEG: tl.constexpr):
    """Accumulate dQ (and the T5 table gradient) of one query block over key blocks [lo, hi)."""
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        k = _load_tile(k_base, offs_n, stride_kn, Sk, HEAD_DIM, D_PAD, MASKED)
        v = _load_tile(v_base, offs_n, stride_vn, Sk, HEAD_DIM, D_PAD, MASKED)
        kpm = offs_n
        if HAS_KPM:
            kpm = tl.load(kpm_base + offs_n, mask=offs_n < Sk, other=0) != 0
        kseg = _load_seg(seg_base, offs_n, Sk, -2, HAS_SEG)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PREC) * qk_scale
        s = _bias_and_mask(s, offs_m[:, None], offs_n[None, :], kpm[None, :], qseg[:, None], kseg[None, :], Sk,
                           pos_off, window, slope2, t5_row, t5_L, MASKED, CAUSAL, HAS_WINDOW, HAS_KPM, HAS_ALIBI,
                           HAS_T5, HAS_SEG)
        p = tl.exp2(s - lse[:, None])
        dp = tl.dot(do, tl.trans(v), input_precision=DOT_PREC)
        ds = p * (dp - delta[:, None])
        dq = tl.dot(ds.to(k.dtype), k, dq, input_precision=DOT_PREC)
        if HAS_T5:
            t5g = _t5_bucket_sums(t5g, ds, offs_m, offs_n, pos_off, t5_bucket, t5_L, NB_PAD)
    return dq, t5g


@triton.jit
def _attn_bwd_dq(
    Q, K, V, DO, DQ,  # DQ (B, H, Sq, D) out, contiguous
    LSE, DELTA, KPM, ALIBI, T5REL, SEG,
    T5BUCKET,  # (2L+1,) int32 bucket of r = -L..L; read only if HAS_T5
    T5GRAD,  # (B*H, t5_rows, NB_PAD) fp32 out: per-program partial sums of the table gradient
    stride_qb, stride_qh, stride_qm, stride_kb, stride_kh, stride_kn, stride_vb, stride_vh, stride_vn,
    stride_dob, stride_doh, stride_dom, stride_dqb, stride_dqh, stride_dqm, stride_kpm, stride_seg,
    H, GROUP, Sq, Sk, pos_off, window, qk_scale, sm_scale, t5_L, t5_rows, Q_BUCKET, K_BUCKET,
    HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr, DOT_PREC: tl.constexpr,
    CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr, HAS_KPM: tl.constexpr,
    HAS_ALIBI: tl.constexpr, HAS_T5: tl.constexpr, HAS_SEG: tl.constexpr, NB_PAD: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = (bh // H).to(tl.int64)
    h = bh % H
    hk = (h // GROUP).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    q = _load_tile(Q + b * stride_qb + h.to(tl.int64) * stride_qh, offs_m, stride_qm, Sq, HEAD_DIM, D_PAD, True)
    do = _load_tile(DO + b * stride_dob + h.to(tl.int64) * stride_doh, offs_m, stride_dom, Sq,
                    HEAD_DIM, D_PAD, True)
    lse = _load_vec(LSE + bh.to(tl.int64) * Sq, offs_m, Sq, float("inf"), True)
    delta = _load_vec(DELTA + bh.to(tl.int64) * Sq, offs_m, Sq, 0.0, True)
    k_base = K + b * stride_kb + hk * stride_kh
    v_base = V + b * stride_vb + hk * stride_vh
    kpm_base = KPM + b * stride_kpm
    seg_base = SEG + b * stride_seg
    qseg = _load_seg(seg_base, offs_m + pos_off, Sk, -1, HAS_SEG)
    slope2 = 0.0
    if HAS_ALIBI:
        slope2 = tl.load(ALIBI + h)
    t5_row = T5REL + h * (2 * t5_L + 1)
    dq = tl.zeros([BLOCK_M, D_PAD], tl.float32)
    t5g = tl.zeros([NB_PAD], tl.float32)
    lo, full_lo, full_hi, hi = _key_range(pid_m * BLOCK_M, Sk, pos_off, window, BLOCK_M, BLOCK_N,
                                          CAUSAL, HAS_WINDOW)
    dq, t5g = _dq_stage(dq, t5g, q, do, lse, delta, offs_m, qseg, k_base, v_base, kpm_base, seg_base, stride_kn,
                        stride_vn,
                        lo, full_lo, Sk, pos_off, window, qk_scale, slope2, t5_row, T5BUCKET, t5_L,
                        HEAD_DIM, D_PAD, BLOCK_N, DOT_PREC, NB_PAD, True,
                        CAUSAL, HAS_WINDOW, HAS_KPM, HAS_ALIBI, HAS_T5, HAS_SEG)
    dq, t5g = _dq_stage(dq, t5g, q, do, lse, delta, offs_m, qseg, k_base, v_base, kpm_base, seg_base, stride_kn,
                        stride_vn,
                        full_lo, full_hi, Sk, pos_off, window, qk_scale, slope2, t5_row, T5BUCKET, t5_L,
                        HEAD_DIM, D_PAD, BLOCK_N, DOT_PREC, NB_PAD, False,
                        CAUSAL, HAS_WINDOW, HAS_KPM, HAS_ALIBI, HAS_T5, HAS_SEG)
    dq, t5g = _dq_stage(dq, t5g, q, do, lse, delta, offs_m, qseg, k_base, v_base, kpm_base, seg_base, stride_kn,
                        stride_vn,
                        full_hi, hi, Sk, pos_off, window, qk_scale, slope2, t5_row, T5BUCKET, t5_L,
                        HEAD_DIM, D_PAD, BLOCK_N, DOT_PREC, NB_PAD, True,
                        CAUSAL, HAS_WINDOW, HAS_KPM, HAS_ALIBI, HAS_T5, HAS_SEG)
    dq_base = DQ + b * stride_dqb + h.to(tl.int64) * stride_dqh
    _store_tile(dq_base, dq * sm_scale, offs_m, stride_dqm, Sq, HEAD_DIM, D_PAD)
    if HAS_T5:
        # This program owns scratch rows [pid_m·R, (pid_m+1)·R), R = BLOCK_M/16: it writes its sums
        # in the first and zeros in the rest, so every row is written whatever BLOCK_M autotuning
        # picked, and the host sums a buffer whose shape does not depend on the config.
        rr = tl.arange(0, BLOCK_M // 16)
        rows = pid_m * (BLOCK_M // 16) + rr
        ids = tl.arange(0, NB_PAD)
        vals = tl.where(rr[:, None] == 0, t5g[None, :], 0.0)
        ptrs = T5GRAD + bh.to(tl.int64) * t5_rows * NB_PAD + rows[:, None] * NB_PAD + ids[None, :]
        tl.store(ptrs, vals, mask=rows[:, None] < t5_rows)
