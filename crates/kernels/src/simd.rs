//! Element-wise `f32` kernels over slices, written so that LLVM vectorises them: a Cephes-style
//! `exp` (range reduction by `ln 2`, degree-5 polynomial, exponent built from bits), the logistic
//! sigmoid, and SiLU's forward and backward passes.
//!
//! The loop bodies are branch-free and call no library function (no `round`, `floor` or
//! `mul_add`, which are calls on the x86-64 SSE2 baseline), so the loops compile to packed
//! instructions on SSE2. On x86-64 processors with AVX2 the same loops are also compiled for
//! AVX2 and chosen at run time (eight lanes instead of four). Neither path uses fused
//! multiply-adds, so both give bit-identical results: the numbers of a run do not depend on the
//! processor's vector width.
//!
//! This module uses only `core` and `std::arch`, so it compiles alone
//! (`rustc -O --emit asm --crate-type lib crates/kernels/src/simd.rs`) to inspect the assembly.

// The constants are spelled as published (Cephes `expf`, Cody and Waite's split of `ln 2`); each
// decimal rounds to the intended `f32`, which is what `excessive_precision` complains about.
#![allow(clippy::excessive_precision)]

/// `log2(e)`.
const LOG2_E: f32 = std::f32::consts::LOG2_E;
/// `1.5 * 2^23`: adding it to a float of magnitude below `2^22` rounds it to an integer (ties to
/// even) in the low mantissa bits; subtracting it again gives that integer as a float.
const ROUNDING_SHIFTER: f32 = 12_582_912.0;
/// The bit pattern of [`ROUNDING_SHIFTER`].
const ROUNDING_SHIFTER_BITS: i32 = 0x4B40_0000;
/// `ln 2` split in two (Cody and Waite): the high part has 9 significant bits, so `n * LN2_HI`
/// is exact for every `|n| <= 150` and the reduced argument loses no bits.
const LN2_HI: f32 = 0.693_359_375;
/// `ln 2 - LN2_HI`.
const LN2_LO: f32 = -2.121_944_4e-4;
/// Below this, `exp` rounds to zero in `f32` (`exp(-103.97) ~ 2^-150`, half the smallest
/// subnormal); the argument is clamped here so the exponent arithmetic stays in range.
const EXP_ARG_MIN: f32 = -104.0;
/// Above this, `exp` overflows to infinity in `f32` (`exp(88.73) > f32::MAX`); clamping here still
/// overflows, as it should, and keeps the exponent arithmetic in range.
const EXP_ARG_MAX: f32 = 89.0;
/// Cephes `expf` polynomial: `exp(r) ~ 1 + r + r^2 * P(r)` on `|r| <= ln(2) / 2`.
const EXP_P0: f32 = 1.987_569_15e-4;
const EXP_P1: f32 = 1.398_199_95e-3;
const EXP_P2: f32 = 8.333_451_9e-3;
const EXP_P3: f32 = 4.166_579_6e-2;
const EXP_P4: f32 = 1.666_666_55e-1;
const EXP_P5: f32 = 5.000_000_1e-1;

/// `exp(x)` for one lane, branch-free: within 2 ulp of the correctly rounded result for normal
/// results, subnormal results by gradual underflow, `+inf` above 88.72, `0` below -103.97,
/// NaN for NaN.
#[inline(always)]
pub fn exp_lane(x: f32) -> f32 {
    // `clamp` keeps NaN, which then flows through every step below to the result.
    let x = x.clamp(EXP_ARG_MIN, EXP_ARG_MAX);
    // n = round(x / ln 2), both as a float and (from the bits of the shifted sum) as an integer.
    let shifted = x * LOG2_E + ROUNDING_SHIFTER;
    let n_float = shifted - ROUNDING_SHIFTER;
    let n = (shifted.to_bits() as i32).wrapping_sub(ROUNDING_SHIFTER_BITS);
    // r = x - n ln 2, in [-ln 2 / 2, ln 2 / 2].
    let r = x - n_float * LN2_HI - n_float * LN2_LO;
    let p = ((((EXP_P0 * r + EXP_P1) * r + EXP_P2) * r + EXP_P3) * r + EXP_P4) * r + EXP_P5;
    let exp_r = p * (r * r) + r + 1.0;
    // 2^n as two factors 2^(n/2) and 2^(n - n/2): n lies in [-150, 128], so each factor is a
    // normal float, and the second product rounds only once, also into the subnormal range.
    let half = n >> 1;
    let scale_a = f32::from_bits(((half + 127) << 23) as u32);
    let scale_b = f32::from_bits(((n - half + 127) << 23) as u32);
    exp_r * scale_a * scale_b
}

/// The logistic sigmoid `1 / (1 + exp(-x))` for one lane: `exp(-x)` overflows to `+inf` for
/// very negative `x`, which gives exactly `0`, so no branch on the sign is needed.
#[inline(always)]
pub fn sigmoid_lane(x: f32) -> f32 {
    1.0 / (1.0 + exp_lane(-x))
}

/// `sqrt(2)`: [`ln_lane`] reduces the mantissa to `[sqrt(1/2), sqrt(2))`.
const SQRT_2: f32 = std::f32::consts::SQRT_2;
/// Cephes `logf` polynomial: `ln(1 + x) ~ x - x^2 / 2 + x^3 P(x)` on `x` in
/// `[sqrt(1/2) - 1, sqrt(2) - 1]`.
const LOG_P: [f32; 9] = [
    7.037_683_629_2e-2,
    -1.151_461_031_0e-1,
    1.167_699_874_0e-1,
    -1.242_014_084_6e-1,
    1.424_932_278_7e-1,
    -1.666_805_766_5e-1,
    2.000_071_476_5e-1,
    -2.499_999_399_3e-1,
    3.333_333_117_4e-1,
];
/// Cephes `tanhf` polynomial: `tanh(x) ~ x + x^3 P(x^2)` for `|x| < 0.625`.
const TANH_P: [f32; 5] = [
    -5.704_988_727_45e-3,
    2.063_908_879_54e-2,
    -5.373_971_555_31e-2,
    1.333_144_220_36e-1,
    -3.333_328_194_22e-1,
];
/// Below this `|x|`, [`tanh_lane`] uses the odd polynomial; above it `1 - 2 / (e^{2|x|} + 1)`,
/// which has no cancellation there (Cephes `tanhf`).
const TANH_POLY_LIMIT: f32 = 0.625;

/// `ln(x)` for one lane, branch-free, for positive normal finite `x` (the only inputs the
/// kernels here give it: `1 + e` with `e` in `[0, 1]`): Cephes `logf`, the exponent from the bits,
/// the mantissa reduced to `[sqrt(1/2), sqrt(2))`, a degree-9 polynomial, within 2 ulp.
#[inline(always)]
pub fn ln_lane(x: f32) -> f32 {
    let bits = x.to_bits() as i32;
    let exponent = (bits >> 23) - 127;
    // The mantissa as a float in [1, 2); halved (exactly) above sqrt(2).
    let m = f32::from_bits(((bits & 0x007F_FFFF) | 0x3F80_0000) as u32);
    let high = m > SQRT_2;
    let m = if high { m * 0.5 } else { m };
    let e = (if high { exponent + 1 } else { exponent }) as f32;
    // Exact: m lies within a factor 2 of 1 (Sterbenz).
    let x = m - 1.0;
    let z = x * x;
    let mut p = LOG_P[0];
    for c in &LOG_P[1..] {
        p = p * x + c;
    }
    let y = p * x * z + e * LN2_LO - 0.5 * z;
    x + y + e * LN2_HI
}

/// `ln(1 + e)` for `e` in `[0, 1]`, accurate also where `1 + e` rounds to `1`: the rounding error
/// of `u = 1 + e` is undone by the factor `e / (u - 1)` (Goldberg's trick); NaN for NaN.
#[inline(always)]
fn ln_1p_lane(e: f32) -> f32 {
    let u = 1.0 + e;
    let d = u - 1.0;
    if d == 0.0 { e } else { ln_lane(u) * (e / d) }
}

/// `(softplus(x), sigmoid(x))` for one lane, from one `exp`: with `e = exp(-|x|)`,
/// `softplus(x) = max(x, 0) + ln(1 + e)` (no overflow for any `x`) and `sigmoid(x)` is
/// `1 / (1 + e)` for `x >= 0` and `e / (1 + e)` below. NaN gives NaN for both.
#[inline(always)]
pub fn softplus_sigmoid_lane(x: f32) -> (f32, f32) {
    let e = exp_lane(-x.abs());
    let inv = 1.0 / (1.0 + e);
    let sigmoid = if x >= 0.0 { inv } else { e * inv };
    // `max` would drop a NaN `x`; the `ln_1p` term carries it (e is NaN then).
    (x.max(0.0) + ln_1p_lane(e), sigmoid)
}

/// `tanh(x)` for one lane, branch-free (Cephes `tanhf`): an odd polynomial below
/// `|x| = 0.625`, `sign(x) (1 - 2 / (e^{2|x|} + 1))` above; exactly `±1` beyond `|x| ~ 9`, NaN
/// for NaN.
#[inline(always)]
pub fn tanh_lane(x: f32) -> f32 {
    let a = x.abs();
    let large = 1.0 - 2.0 / (exp_lane(a + a) + 1.0);
    let z = a * a;
    let mut p = TANH_P[0];
    for c in &TANH_P[1..] {
        p = p * z + c;
    }
    let small = p * z * a + a;
    // Computed for |x| and signed last, so that tanh(-0) = -0.
    (if a < TANH_POLY_LIMIT { small } else { large }).copysign(x)
}

#[inline(always)]
fn exp_body(input: &[f32], output: &mut [f32]) {
    for (y, &x) in output.iter_mut().zip(input) {
        *y = exp_lane(x);
    }
}

#[inline(always)]
fn silu_body(input: &[f32], output: &mut [f32]) {
    for (y, &x) in output.iter_mut().zip(input) {
        *y = x * sigmoid_lane(x);
    }
}

#[inline(always)]
fn silu_in_place_body(values: &mut [f32]) {
    for v in values.iter_mut() {
        *v *= sigmoid_lane(*v);
    }
}

#[inline(always)]
fn silu_keeping_sigmoid_body(input: &[f32], output: &mut [f32], sigmoid: &mut [f32]) {
    for ((y, s), &x) in output.iter_mut().zip(sigmoid.iter_mut()).zip(input) {
        let sig = sigmoid_lane(x);
        *s = sig;
        *y = x * sig;
    }
}

#[inline(always)]
fn silu_backward_in_place_body(input: &[f32], sigmoid: &[f32], grad: &mut [f32]) {
    for ((g, &x), &s) in grad.iter_mut().zip(input).zip(sigmoid) {
        *g *= s * (1.0 + x * (1.0 - s));
    }
}

#[inline(always)]
fn sigmoid_body(input: &[f32], output: &mut [f32]) {
    for (y, &x) in output.iter_mut().zip(input) {
        *y = sigmoid_lane(x);
    }
}

#[inline(always)]
fn sigmoid_in_place_body(values: &mut [f32]) {
    for v in values.iter_mut() {
        *v = sigmoid_lane(*v);
    }
}

#[inline(always)]
fn sigmoid_backward_in_place_body(output: &[f32], grad: &mut [f32]) {
    for (g, &s) in grad.iter_mut().zip(output) {
        *g *= s * (1.0 - s);
    }
}

#[inline(always)]
fn tanh_body(input: &[f32], output: &mut [f32]) {
    for (y, &x) in output.iter_mut().zip(input) {
        *y = tanh_lane(x);
    }
}

#[inline(always)]
fn tanh_in_place_body(values: &mut [f32]) {
    for v in values.iter_mut() {
        *v = tanh_lane(*v);
    }
}

#[inline(always)]
fn tanh_backward_in_place_body(output: &[f32], grad: &mut [f32]) {
    for (g, &t) in grad.iter_mut().zip(output) {
        *g *= 1.0 - t * t;
    }
}

#[inline(always)]
fn softplus_body(input: &[f32], output: &mut [f32]) {
    for (y, &x) in output.iter_mut().zip(input) {
        *y = softplus_sigmoid_lane(x).0;
    }
}

#[inline(always)]
fn softplus_in_place_body(values: &mut [f32]) {
    for v in values.iter_mut() {
        *v = softplus_sigmoid_lane(*v).0;
    }
}

#[inline(always)]
fn softplus_keeping_sigmoid_body(input: &[f32], output: &mut [f32], sigmoid: &mut [f32]) {
    for ((y, s), &x) in output.iter_mut().zip(sigmoid.iter_mut()).zip(input) {
        (*y, *s) = softplus_sigmoid_lane(x);
    }
}

#[inline(always)]
fn mul_in_place_body(factor: &[f32], grad: &mut [f32]) {
    for (g, &f) in grad.iter_mut().zip(factor) {
        *g *= f;
    }
}

/// One row of the GRU gate's forward pass (see [`gru_gate`]); every slice has the row's width.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn gru_gate_row(
    reset: &[f32],
    cand: &[f32],
    update: &[f32],
    h: &[f32],
    shift: f32,
    out: &mut [f32],
    gates: Option<(&mut [f32], &mut [f32], &mut [f32])>,
) {
    let d = out.len();
    let (reset, cand, update, h) = (&reset[..d], &cand[..d], &update[..d], &h[..d]);
    match gates {
        Some((gr, gt, gu)) => {
            let (gr, gt, gu) = (&mut gr[..d], &mut gt[..d], &mut gu[..d]);
            for j in 0..d {
                let r = sigmoid_lane(reset[j]);
                let t = tanh_lane(r * cand[j]);
                let u = sigmoid_lane(update[j] - shift);
                gr[j] = r;
                gt[j] = t;
                gu[j] = u;
                out[j] = h[j] + u * (t - h[j]);
            }
        }
        None => {
            for j in 0..d {
                let r = sigmoid_lane(reset[j]);
                let t = tanh_lane(r * cand[j]);
                let u = sigmoid_lane(update[j] - shift);
                out[j] = h[j] + u * (t - h[j]);
            }
        }
    }
}

#[inline(always)]
fn gru_gate_body(
    parts: &[f32],
    h: &[f32],
    shift: f32,
    width: usize,
    out: &mut [f32],
    gates: &mut [f32],
) {
    if check_gru_buffers(parts, h, out, width) == 0 {
        return;
    }
    let keep = gates.len() == parts.len();
    for (row, (out_row, h_row)) in out
        .chunks_exact_mut(width)
        .zip(h.chunks_exact(width))
        .enumerate()
    {
        let p = &parts[row * 3 * width..(row + 1) * 3 * width];
        let (reset, rest) = p.split_at(width);
        let (cand, update) = rest.split_at(width);
        let gates_row = if keep {
            let g = &mut gates[row * 3 * width..(row + 1) * 3 * width];
            let (gr, rest) = g.split_at_mut(width);
            let (gt, gu) = rest.split_at_mut(width);
            Some((gr, gt, gu))
        } else {
            None
        };
        gru_gate_row(reset, cand, update, h_row, shift, out_row, gates_row);
    }
}

#[inline(always)]
fn gru_gate_backward_body(
    parts: &[f32],
    h: &[f32],
    width: usize,
    gates_to_dparts: &mut [f32],
    grad_to_dh: &mut [f32],
) {
    if check_gru_buffers(parts, h, grad_to_dh, width) == 0 {
        return;
    }
    assert_eq!(gates_to_dparts.len(), parts.len(), "GRU gate buffers");
    for (row, (g_row, h_row)) in grad_to_dh
        .chunks_exact_mut(width)
        .zip(h.chunks_exact(width))
        .enumerate()
    {
        let cand = &parts[row * 3 * width + width..][..width];
        let gates = &mut gates_to_dparts[row * 3 * width..(row + 1) * 3 * width];
        let (gr, rest) = gates.split_at_mut(width);
        let (gt, gu) = rest.split_at_mut(width);
        let (g_row, h_row) = (&mut g_row[..width], &h_row[..width]);
        for j in 0..width {
            let (r, t, u, hj, g) = (gr[j], gt[j], gu[j], h_row[j], g_row[j]);
            // h' = h + u (t - h), t = tanh(r c), r = sigmoid(p_r), u = sigmoid(p_u - shift).
            let dq = g * u * (1.0 - t * t);
            gr[j] = dq * cand[j] * (r * (1.0 - r));
            gt[j] = dq * r;
            gu[j] = g * (t - hj) * (u * (1.0 - u));
            g_row[j] = g * (1.0 - u);
        }
    }
}

/// Checks the lengths of a GRU gate's `[B, 3D]` pre-activations, `[B, D]` state and `[B, D]`
/// output or gradient for row width `D = width`, and returns `B`. Panics on inconsistent
/// lengths: the tensor-level callers check shapes first, so that is a programming error.
fn check_gru_buffers(parts: &[f32], h: &[f32], out: &[f32], width: usize) -> usize {
    let rows = h.len().checked_div(width).unwrap_or(0);
    assert!(
        parts.len() == 3 * h.len() && h.len() == out.len() && rows * width == h.len(),
        "GRU gate buffers: pre-activations {}, state {}, output {}, width {width}: \
         expected 3 B D, B D, B D",
        parts.len(),
        h.len(),
        out.len()
    );
    rows
}

/// Defines a public kernel that runs its body compiled for AVX2 when the processor has it and
/// for the SSE2 baseline otherwise (the bodies are `#[inline(always)]`, so each copy is
/// vectorised for its own instruction set).
macro_rules! dispatched_kernel {
    ($(#[$doc:meta])* $name:ident, $avx2:ident, $body:ident, ($($arg:ident: $ty:ty),*)) => {
        $(#[$doc])*
        pub fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the processor supports AVX2, checked just above.
                unsafe { $avx2($($arg),*) };
                return;
            }
            $body($($arg),*)
        }

        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2")]
        fn $avx2($($arg: $ty),*) {
            $body($($arg),*)
        }
    };
}

dispatched_kernel!(
    /// `output[i] = exp(input[i])`, each within 2 ulp of the correctly rounded value (see
    /// [`exp_lane`]). Extra elements of the longer slice are left alone.
    exp_slice, exp_slice_avx2, exp_body, (input: &[f32], output: &mut [f32])
);

dispatched_kernel!(
    /// SiLU, `output[i] = x * sigmoid(x)` with `x = input[i]`.
    silu_slice, silu_slice_avx2, silu_body, (input: &[f32], output: &mut [f32])
);

dispatched_kernel!(
    /// SiLU in place: `values[i] = x * sigmoid(x)`.
    silu_in_place, silu_in_place_avx2, silu_in_place_body, (values: &mut [f32])
);

dispatched_kernel!(
    /// SiLU that also keeps the sigmoid for the backward pass: `sigmoid[i] = sigmoid(x)` and
    /// `output[i] = x * sigmoid[i]`, with `x = input[i]`.
    silu_keeping_sigmoid,
    silu_keeping_sigmoid_avx2,
    silu_keeping_sigmoid_body,
    (input: &[f32], output: &mut [f32], sigmoid: &mut [f32])
);

dispatched_kernel!(
    /// SiLU's backward pass in place: `grad[i] *= s * (1 + x * (1 - s))`, with `x = input[i]`
    /// and `s = sigmoid[i]` (the derivative of `x * sigmoid(x)`).
    silu_backward_in_place,
    silu_backward_in_place_avx2,
    silu_backward_in_place_body,
    (input: &[f32], sigmoid: &[f32], grad: &mut [f32])
);

dispatched_kernel!(
    /// The logistic sigmoid, `output[i] = 1 / (1 + exp(-input[i]))`.
    sigmoid_slice, sigmoid_slice_avx2, sigmoid_body, (input: &[f32], output: &mut [f32])
);

dispatched_kernel!(
    /// The logistic sigmoid in place.
    sigmoid_in_place, sigmoid_in_place_avx2, sigmoid_in_place_body, (values: &mut [f32])
);

dispatched_kernel!(
    /// The sigmoid's backward pass in place from its output: `grad[i] *= s * (1 - s)` with
    /// `s = output[i]`.
    sigmoid_backward_in_place,
    sigmoid_backward_in_place_avx2,
    sigmoid_backward_in_place_body,
    (output: &[f32], grad: &mut [f32])
);

dispatched_kernel!(
    /// `output[i] = tanh(input[i])` (see [`tanh_lane`]).
    tanh_slice, tanh_slice_avx2, tanh_body, (input: &[f32], output: &mut [f32])
);

dispatched_kernel!(
    /// `tanh` in place.
    tanh_in_place, tanh_in_place_avx2, tanh_in_place_body, (values: &mut [f32])
);

dispatched_kernel!(
    /// `tanh`'s backward pass in place from its output: `grad[i] *= 1 - t^2` with
    /// `t = output[i]`.
    tanh_backward_in_place,
    tanh_backward_in_place_avx2,
    tanh_backward_in_place_body,
    (output: &[f32], grad: &mut [f32])
);

dispatched_kernel!(
    /// `output[i] = softplus(input[i]) = ln(1 + exp(input[i]))` (see
    /// [`softplus_sigmoid_lane`]).
    softplus_slice, softplus_slice_avx2, softplus_body, (input: &[f32], output: &mut [f32])
);

dispatched_kernel!(
    /// `softplus` in place.
    softplus_in_place, softplus_in_place_avx2, softplus_in_place_body, (values: &mut [f32])
);

dispatched_kernel!(
    /// `softplus` that also keeps its derivative, the sigmoid, for the backward pass:
    /// `output[i] = softplus(x)`, `sigmoid[i] = sigmoid(x)` with `x = input[i]`.
    softplus_keeping_sigmoid,
    softplus_keeping_sigmoid_avx2,
    softplus_keeping_sigmoid_body,
    (input: &[f32], output: &mut [f32], sigmoid: &mut [f32])
);

dispatched_kernel!(
    /// `grad[i] *= factor[i]`: the backward pass of an element-wise function whose derivative
    /// was kept by the forward pass (softplus: its sigmoid).
    mul_in_place, mul_in_place_avx2, mul_in_place_body, (factor: &[f32], grad: &mut [f32])
);

dispatched_kernel!(
    /// The GRU gate of DreamerV3's cell, row by row: with `parts` the `[B, 3 D]` pre-activations
    /// `[p_r | p_c | p_u]` of each row, `h` the `[B, D]` state and `D = width`,
    /// `r = sigmoid(p_r)`, `t = tanh(r p_c)`, `u = sigmoid(p_u - shift)` and
    /// `out = h + u (t - h)`. When `gates` has the length of `parts` it receives `[r | t | u]`
    /// per row for the backward pass; pass an empty slice not to keep them.
    gru_gate,
    gru_gate_avx2,
    gru_gate_body,
    (parts: &[f32], h: &[f32], shift: f32, width: usize, out: &mut [f32], gates: &mut [f32])
);

dispatched_kernel!(
    /// The GRU gate's backward pass in one loop, from the forward pass's `parts`, `h` and kept
    /// `[r | t | u]` (in `gates_to_dparts`) and the output gradient (in `grad_to_dh`):
    /// overwrites `gates_to_dparts` with the gradient of `parts` and `grad_to_dh` with the
    /// gradient of `h`.
    gru_gate_backward,
    gru_gate_backward_avx2,
    gru_gate_backward_body,
    (parts: &[f32], h: &[f32], width: usize, gates_to_dparts: &mut [f32], grad_to_dh: &mut [f32])
);

#[cfg(test)]
mod tests {
    use super::*;

    /// Distance in units in the last place between two finite floats of the same sign.
    fn ulp_distance(a: f32, b: f32) -> u32 {
        assert!(
            a.is_finite() && b.is_finite() && (a >= 0.0) == (b >= 0.0),
            "{a} {b}"
        );
        a.to_bits().abs_diff(b.to_bits())
    }

    /// Every 1009th float between the bounds (about two million points, every binade).
    fn sweep(lo: f32, hi: f32) -> Vec<f32> {
        let mut values = Vec::new();
        for (start, end) in [(0.0f32, -lo), (0.0f32, hi)] {
            let sign = if end == -lo { -1.0 } else { 1.0 };
            let (mut bits, end_bits) = (start.to_bits(), end.to_bits());
            while bits <= end_bits {
                values.push(sign * f32::from_bits(bits));
                bits += 1009;
            }
        }
        values
    }

    #[test]
    fn exp_is_within_two_ulp_of_the_rounded_exact_value_and_of_std_exp() {
        // Normal results only: exp(-87.33) is the smallest normal float.
        let input = sweep(-87.33, 88.72);
        assert!(input.len() > 2_000_000, "{}", input.len());
        let mut output = vec![0.0; input.len()];
        exp_slice(&input, &mut output);
        let (mut max_ulp_exact, mut max_ulp_std, mut max_rel_std) = (0, 0, 0.0f64);
        for (&x, &y) in input.iter().zip(&output) {
            let exact = f64::from(x).exp() as f32;
            let std = x.exp();
            max_ulp_exact = max_ulp_exact.max(ulp_distance(y, exact));
            max_ulp_std = max_ulp_std.max(ulp_distance(y, std));
            max_rel_std = max_rel_std.max((f64::from(y) / f64::from(std) - 1.0).abs());
        }
        eprintln!(
            "exp over {} points: max {max_ulp_exact} ulp from exp rounded from f64, \
             max {max_ulp_std} ulp and relative error {max_rel_std:.3e} from f32::exp",
            input.len()
        );
        assert!(max_ulp_exact <= 2, "{max_ulp_exact} ulp");
        assert!(max_ulp_std <= 2, "{max_ulp_std} ulp");
        assert!(max_rel_std < 2.5e-7, "{max_rel_std}");
    }

    #[test]
    fn exp_underflows_gradually_overflows_to_infinity_and_keeps_nan() {
        let input = [
            0.0,
            -0.0,
            1.0,
            88.72,
            88.73,
            89.0,
            1e30,
            f32::INFINITY,
            -95.0,
            -103.0,
            -103.9,
            -104.5,
            -1e30,
            f32::NEG_INFINITY,
            f32::NAN,
        ];
        let mut output = [0.0; 15];
        exp_slice(&input, &mut output);
        assert_eq!(output[0], 1.0);
        assert_eq!(output[1], 1.0);
        assert!(
            ulp_distance(output[2], std::f32::consts::E) <= 1,
            "{}",
            output[2]
        );
        assert!(output[3].is_finite() && output[3] > 3.3e38, "{}", output[3]);
        assert_eq!(&output[4..8], &[f32::INFINITY; 4]);
        // Subnormal results: within two subnormal steps of the exact value.
        for (i, &x) in input.iter().enumerate().skip(8).take(3) {
            let exact = f64::from(x).exp() as f32;
            assert!(
                output[i] > 0.0 && ulp_distance(output[i], exact) <= 2,
                "exp({x}) = {}",
                output[i]
            );
        }
        assert_eq!(&output[11..14], &[0.0; 3]);
        assert!(output[14].is_nan());
    }

    #[test]
    fn dispatched_and_baseline_kernels_give_identical_bits() {
        // The test's own copy of each body is compiled for the baseline (SSE2 on x86-64); the
        // public kernels take the AVX2 copy where the processor has it.
        let input = sweep(-120.0, 100.0);
        let (mut baseline, mut dispatched) = (vec![0.0; input.len()], vec![0.0; input.len()]);
        exp_body(&input, &mut baseline);
        exp_slice(&input, &mut dispatched);
        assert!(
            baseline
                .iter()
                .zip(&dispatched)
                .all(|(a, b)| a.to_bits() == b.to_bits())
        );
        silu_body(&input, &mut baseline);
        silu_slice(&input, &mut dispatched);
        assert!(
            baseline
                .iter()
                .zip(&dispatched)
                .all(|(a, b)| a.to_bits() == b.to_bits())
        );
    }

    #[test]
    fn silu_kernels_match_the_f64_formulas() {
        // 1003 values: not a multiple of any vector width, so the loop tails run too.
        let input: Vec<f32> = (0..1003).map(|i| (i as f32 - 501.0) * 0.173).collect();
        let grad_in: Vec<f32> = (0..1003).map(|i| 1.0 + (i % 7) as f32 * 0.25).collect();
        let n = input.len();
        let (mut output, mut sigmoid) = (vec![0.0; n], vec![0.0; n]);
        silu_keeping_sigmoid(&input, &mut output, &mut sigmoid);
        let mut plain = vec![0.0; n];
        silu_slice(&input, &mut plain);
        let mut in_place = input.clone();
        silu_in_place(&mut in_place);
        let mut grad = grad_in.clone();
        silu_backward_in_place(&input, &sigmoid, &mut grad);
        for i in 0..n {
            let x = f64::from(input[i]);
            let s = 1.0 / (1.0 + (-x).exp());
            let close =
                |got: f32, want: f64| (f64::from(got) - want).abs() <= 1e-6 * want.abs().max(1.0);
            assert!(
                close(sigmoid[i], s),
                "sigmoid({x}) = {}, want {s}",
                sigmoid[i]
            );
            assert!(close(output[i], x * s), "silu({x}) = {}", output[i]);
            assert_eq!((plain[i], in_place[i]), (output[i], output[i]));
            let want_grad = f64::from(grad_in[i]) * s * (1.0 + x * (1.0 - s));
            assert!(
                close(grad[i], want_grad),
                "grad at {x} = {}, want {want_grad}",
                grad[i]
            );
        }
    }

    /// Max ulp distance from the `f64` function rounded to `f32`, over `input`, for results in
    /// the normal range (the sign must agree).
    fn max_ulp(input: &[f32], output: &[f32], exact: impl Fn(f64) -> f64) -> (u32, f32) {
        let mut worst = (0, 0.0);
        for (&x, &y) in input.iter().zip(output) {
            let want = exact(f64::from(x)) as f32;
            if want.abs() < f32::MIN_POSITIVE {
                continue;
            }
            let d = ulp_distance(y, want);
            if d > worst.0 {
                worst = (d, x);
            }
        }
        worst
    }

    #[test]
    fn ln_is_within_two_ulp_over_every_binade() {
        // Positive normal floats, every 1009th bit pattern, and all of [1, 2] (softplus's range).
        let mut input: Vec<f32> = (f32::MIN_POSITIVE.to_bits()..=f32::MAX.to_bits())
            .step_by(1009)
            .map(f32::from_bits)
            .collect();
        input.extend(
            (0..=(1u32 << 23))
                .step_by(7)
                .map(|i| 1.0 + i as f32 / (1u32 << 23) as f32),
        );
        let output: Vec<f32> = input.iter().map(|&x| ln_lane(x)).collect();
        let (ulp, at) = max_ulp(&input, &output, f64::ln);
        eprintln!("ln over {} points: max {ulp} ulp (at {at})", input.len());
        assert!(ulp <= 2, "{ulp} ulp at {at}");
        assert_eq!(ln_lane(1.0), 0.0);
    }

    #[test]
    fn tanh_is_within_two_ulp_and_saturates_to_one() {
        let input = sweep(-20.0, 20.0);
        let mut output = vec![0.0; input.len()];
        tanh_slice(&input, &mut output);
        let (ulp, at) = max_ulp(&input, &output, f64::tanh);
        eprintln!("tanh over {} points: max {ulp} ulp (at {at})", input.len());
        assert!(ulp <= 2, "{ulp} ulp at {at}");
        let special = [
            0.0,
            -0.0,
            1e-30,
            9.5,
            -9.5,
            1e30,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ];
        let mut out = [0.0; 8];
        tanh_slice(&special, &mut out);
        assert_eq!(out, [0.0, -0.0, 1e-30, 1.0, -1.0, 1.0, 1.0, -1.0]);
        assert!(out[1].is_sign_negative());
        assert!(tanh_lane(f32::NAN).is_nan());
    }

    #[test]
    fn softplus_and_its_sigmoid_are_accurate_for_every_input_size() {
        // Relative accuracy also far left, where softplus(x) ~ e^x is tiny (ln(1 + e) with
        // 1 + e rounding to 1 must not give 0).
        let input = sweep(-87.0, 100.0);
        let n = input.len();
        let (mut value, mut sigmoid) = (vec![0.0; n], vec![0.0; n]);
        softplus_keeping_sigmoid(&input, &mut value, &mut sigmoid);
        let softplus_exact = |x: f64| x.max(0.0) + (-x.abs()).exp().ln_1p();
        let (ulp, at) = max_ulp(&input, &value, softplus_exact);
        eprintln!("softplus over {n} points: max {ulp} ulp (at {at})");
        assert!(ulp <= 4, "softplus: {ulp} ulp at {at}");
        let (ulp, at) = max_ulp(&input, &sigmoid, |x| 1.0 / (1.0 + (-x).exp()));
        eprintln!("softplus's sigmoid: max {ulp} ulp (at {at})");
        assert!(ulp <= 4, "sigmoid: {ulp} ulp at {at}");
        let special = [f32::INFINITY, f32::NEG_INFINITY, 0.0, -200.0];
        let mut out = [0.0; 4];
        let mut sig = [0.0; 4];
        softplus_keeping_sigmoid(&special, &mut out, &mut sig);
        assert_eq!([out[0], out[1], out[3]], [f32::INFINITY, 0.0, 0.0]);
        assert!(
            ulp_distance(out[2], std::f32::consts::LN_2) <= 1,
            "{}",
            out[2]
        );
        assert_eq!(sig, [1.0, 0.0, 0.5, 0.0]);
        let (v, s) = softplus_sigmoid_lane(f32::NAN);
        assert!(v.is_nan() && s.is_nan());
    }

    #[test]
    fn new_dispatched_kernels_give_the_baseline_bits() {
        let input = sweep(-120.0, 100.0);
        let n = input.len();
        let same = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
        let (mut baseline, mut dispatched) = (vec![0.0; n], vec![0.0; n]);
        sigmoid_body(&input, &mut baseline);
        sigmoid_slice(&input, &mut dispatched);
        assert!(same(&baseline, &dispatched), "sigmoid");
        tanh_body(&input, &mut baseline);
        tanh_slice(&input, &mut dispatched);
        assert!(same(&baseline, &dispatched), "tanh");
        softplus_body(&input, &mut baseline);
        softplus_slice(&input, &mut dispatched);
        assert!(same(&baseline, &dispatched), "softplus");
        // The GRU gate, forward and backward, on rows of width 37 (odd: the tails run).
        let width = 37;
        let rows = 3 * n / (3 * width) / 3;
        let parts: Vec<f32> = input[..3 * rows * width].iter().map(|x| x * 0.1).collect();
        let h: Vec<f32> = input[..rows * width]
            .iter()
            .map(|x| (x * 0.01).sin())
            .collect();
        let grad: Vec<f32> = input[rows * width..2 * rows * width]
            .iter()
            .map(|x| x.cos())
            .collect();
        let run = |dispatch: bool| {
            let mut out = vec![0.0; rows * width];
            let mut gates = vec![0.0; 3 * rows * width];
            let mut dh = grad.clone();
            if dispatch {
                gru_gate(&parts, &h, 1.0, width, &mut out, &mut gates);
                gru_gate_backward(&parts, &h, width, &mut gates, &mut dh);
            } else {
                gru_gate_body(&parts, &h, 1.0, width, &mut out, &mut gates);
                gru_gate_backward_body(&parts, &h, width, &mut gates, &mut dh);
            }
            (out, gates, dh)
        };
        let (a, b) = (run(false), run(true));
        assert!(
            same(&a.0, &b.0) && same(&a.1, &b.1) && same(&a.2, &b.2),
            "gru gate"
        );
    }

    #[test]
    fn gru_gate_matches_the_f64_formulas_forward_and_backward() {
        let (rows, width) = (5, 13);
        let parts: Vec<f32> = (0..3 * rows * width)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.09)
            .collect();
        let h: Vec<f32> = (0..rows * width)
            .map(|i| ((i * 11 % 23) as f32 - 11.0) * 0.08)
            .collect();
        let grad: Vec<f32> = (0..rows * width)
            .map(|i| 1.0 - (i % 5) as f32 * 0.4)
            .collect();
        let shift = 1.0f32;
        let mut out = vec![0.0; rows * width];
        let mut no_gates = vec![0.0; rows * width];
        gru_gate(&parts, &h, shift, width, &mut no_gates, &mut []);
        let mut gates = vec![0.0; 3 * rows * width];
        gru_gate(&parts, &h, shift, width, &mut out, &mut gates);
        assert_eq!(
            out, no_gates,
            "keeping the gates must not change the output"
        );
        let mut dh = grad.clone();
        gru_gate_backward(&parts, &h, width, &mut gates, &mut dh);
        let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
        let close =
            |got: f32, want: f64| (f64::from(got) - want).abs() <= 2e-6 * want.abs().max(1.0);
        for b in 0..rows {
            for j in 0..width {
                let p = |k: usize| f64::from(parts[b * 3 * width + k * width + j]);
                let (hj, g) = (f64::from(h[b * width + j]), f64::from(grad[b * width + j]));
                let r = sig(p(0));
                let t = (r * p(1)).tanh();
                let u = sig(p(2) - f64::from(shift));
                assert!(
                    close(out[b * width + j], hj + u * (t - hj)),
                    "output {b} {j}"
                );
                let dq = g * u * (1.0 - t * t);
                let want = [
                    dq * p(1) * r * (1.0 - r),
                    dq * r,
                    g * (t - hj) * u * (1.0 - u),
                ];
                for (k, w) in want.iter().enumerate() {
                    let got = gates[b * 3 * width + k * width + j];
                    assert!(close(got, *w), "d parts[{k}] at {b} {j}: {got} against {w}");
                }
                assert!(close(dh[b * width + j], g * (1.0 - u)), "d h at {b} {j}");
            }
        }
    }
}
