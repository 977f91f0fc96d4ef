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
}
