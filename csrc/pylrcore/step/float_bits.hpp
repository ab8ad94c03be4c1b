// The floating-point formats gradients come in (float32, float64, float16, bfloat16), seen as raw
// bits: the non-finite test on the exponent bits and the exact widening to double. Shared by the
// CPU scan (step/nonfinite.hpp) and the CUDA check kernel (cuda/check.cu), so both decide "NaN/Inf" and
// square the same values bit for bit.
//
// Why bits: a value is non-finite exactly when its exponent is all ones, so (bits & magnitude) >=
// all-ones exponent is true for NaN and +-Inf and false for every finite value, including the
// largest ones (FLT_MAX, 65504 in float16, the bfloat16 maximum), which a comparison such as
// |x| > max could get wrong after a rounding conversion.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <sstream>

#include "pylrcore/common.hpp"
#include "pylrcore/hd.hpp"

namespace pylrcore {

// Codes shared with the Python layer (pylrcore/nonfinite.py, pylrcore/torch/cuda.py); do not renumber.
enum class DType : int { F32 = 0, F64 = 1, F16 = 2, BF16 = 3 };
// numpy's and torch's names for them
inline constexpr Named<DType> kDTypeNames[] = {
    {DType::F32, "float32"}, {DType::F64, "float64"}, {DType::F16, "float16"}, {DType::BF16, "bfloat16"}};

// The one check of a dtype code: the DType `code` names, else std::invalid_argument naming the
// setting (`what`, or `what[index]` in a table) and listing the codes of kDTypeNames. The core's
// entry points take a DType but check it again with this, because callers cast it from plain ints
// (the Python tables) and a code outside the table must never reach dtype_size or widen_at.
inline constexpr std::size_t kNotInTable = static_cast<std::size_t>(-1);

inline DType dtype_from_code(int code, const char* what, std::size_t index = kNotInTable) {
  for (const Named<DType>& entry : kDTypeNames)
    if (static_cast<int>(entry.value) == code) return entry.value;
  std::ostringstream s;  // built only on failure: table checks run this per tensor, per step
  s << what;
  if (index != kNotInTable) s << "[" << index << "]";
  s << " has unknown dtype code " << code << " (";
  const char* separator = "";
  for (const Named<DType>& entry : kDTypeNames) {
    s << separator << static_cast<int>(entry.value) << "=" << entry.name;
    separator = ", ";
  }
  s << ")";
  fail(s.str());
}

PYLRCORE_HD inline std::size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::F32: return 4;
    case DType::F64: return 8;
    case DType::F16:
    case DType::BF16: return 2;
  }
  return 0;
}

namespace float_bits {

// Bit casts. The host form is memcpy (the defined way in C++17; compiles to a register move). The
// device has no memcpy-free bit cast in C++17, but has intrinsics that are exactly that.
PYLRCORE_HD inline float float_from_bits(std::uint32_t b) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(b);
#else
  float f;
  std::memcpy(&f, &b, sizeof f);
  return f;
#endif
}

PYLRCORE_HD inline std::uint32_t bits_from_float(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  std::uint32_t b;
  std::memcpy(&b, &f, sizeof b);
  return b;
#endif
}

PYLRCORE_HD inline double double_from_bits(std::uint64_t b) {
#if defined(__CUDA_ARCH__)
  return __longlong_as_double(static_cast<long long>(b));
#else
  double d;
  std::memcpy(&d, &b, sizeof d);
  return d;
#endif
}

// IEEE half -> float, exact for every input (subnormals, infinities, NaN payloads), branch-free so
// that it vectorises. Rebias the exponent by 127-15; infinities/NaN get the float all-ones
// exponent; a subnormal half m*2^-24 is built as the float (1 + m/1024)*2^-14 minus 2^-14 (exact).
PYLRCORE_HD inline float half_to_float(std::uint16_t h) {
  const std::uint32_t magnitude = static_cast<std::uint32_t>(h & 0x7fffu) << 13;
  const std::uint32_t exponent = magnitude & 0x0f800000u;
  std::uint32_t bits = magnitude + ((127u - 15u) << 23);
  bits += exponent == 0x0f800000u ? ((128u - 16u) << 23) : 0u;  // inf/NaN: to exponent 255
  bits += exponent == 0u ? (1u << 23) : 0u;                      // zero/subnormal: add implicit one
  const float unsigned_value = float_from_bits(bits) - (exponent == 0u ? 0x1p-14f : 0.0f);
  return float_from_bits(bits_from_float(unsigned_value) | (static_cast<std::uint32_t>(h & 0x8000u) << 16));
}

PYLRCORE_HD inline float bfloat16_to_float(std::uint16_t h) {
  return float_from_bits(static_cast<std::uint32_t>(h) << 16);
}

// Per format: the raw bits type, the magnitude mask, the all-ones exponent, and the exact widening.
// A value is non-finite exactly when (bits & kMagnitude) >= kExponent.
template <class B, B Magnitude, B Exponent>
struct Format {
  using Bits = B;
  static constexpr Bits kMagnitude = Magnitude, kExponent = Exponent;
};
struct F32 : Format<std::uint32_t, 0x7fffffffu, 0x7f800000u> {
  PYLRCORE_HD static double widen(Bits b) { return static_cast<double>(float_from_bits(b)); }
};
struct F64 : Format<std::uint64_t, 0x7fffffffffffffffull, 0x7ff0000000000000ull> {
  PYLRCORE_HD static double widen(Bits b) { return double_from_bits(b); }
};
struct F16 : Format<std::uint16_t, 0x7fffu, 0x7c00u> {
  PYLRCORE_HD static double widen(Bits b) { return static_cast<double>(half_to_float(b)); }
};
struct BF16 : Format<std::uint16_t, 0x7fffu, 0x7f80u> {
  PYLRCORE_HD static double widen(Bits b) { return static_cast<double>(bfloat16_to_float(b)); }
};

template <class Format>
PYLRCORE_HD inline bool is_nonfinite_bits(typename Format::Bits b) {
  return static_cast<typename Format::Bits>(b & Format::kMagnitude) >= Format::kExponent;
}

// One element at an address aligned for its dtype, widened exactly: a 0-d loss tensor read where it
// lies (device kernels; host code reads through memcpy-based loads instead).
PYLRCORE_HD inline double widen_at(const void* p, DType dtype) {
  switch (dtype) {
    case DType::F32: return F32::widen(*static_cast<const F32::Bits*>(p));
    case DType::F64: return F64::widen(*static_cast<const F64::Bits*>(p));
    case DType::F16: return F16::widen(*static_cast<const F16::Bits*>(p));
    case DType::BF16: return BF16::widen(*static_cast<const BF16::Bits*>(p));
  }
  return 0.0;
}

}  // namespace float_bits

// Writes values[i] into the float32 or float64 scalar at addresses[i] (host memory, aligned, alive:
// the caller's guarantee), for i < n. Other dtypes are refused before anything is written.
inline void store_scalars(const std::uintptr_t* addresses, const DType* dtypes, const double* values, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i)
    if (dtypes[i] != DType::F32 && dtypes[i] != DType::F64) fail("scalars must be float32 or float64");
  for (std::size_t i = 0; i < n; ++i) {
    if (dtypes[i] == DType::F32)
      *reinterpret_cast<float*>(addresses[i]) = static_cast<float>(values[i]);
    else
      *reinterpret_cast<double*>(addresses[i]) = values[i];
  }
}

}  // namespace pylrcore
