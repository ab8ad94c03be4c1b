// Small shared pieces of the core: argument checks that name the argument, and a read-only view.
// Misuse throws std::invalid_argument (mapped to Python ValueError by the bindings); expected
// outcomes such as "the loss diverged" are returned as values, never thrown.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>

namespace pylrcore {

// The divergence factor: a range test has diverged where its smoothed loss exceeds this x its
// running minimum. fastai and Lightning stop at 4x (torch-lr-finder at 5x). One value for every
// part of pylrcore (suggest's cut, the finder's and the device tracker's stop, the CLI, the demo,
// the plot), so one curve never reads as diverged at two different lrs.
inline constexpr double kDivergeFactor = 4.0;

[[noreturn]] inline void fail(const std::string& message) { throw std::invalid_argument(message); }

inline void require(bool ok, const char* message) {
  if (!ok) fail(message);
}

// "losses[17] = nan" style description of an offending element.
inline std::string describe_element(const char* name, std::size_t index, double value) {
  std::ostringstream s;
  s << name << "[" << index << "] = " << value;
  return s.str();
}

inline bool is_finite(double x) { return std::isfinite(x); }

// Saturating int64 addition for counts and steps that arrive from callers (skips, windows, steps,
// counters loaded from checkpoints): an overflowing sum is undefined behaviour and, used as
// a size or a loop bound, a crash or a hang. Saturated at INT64_MAX/MIN, comparisons stay correct.
constexpr std::int64_t kInt64Max = INT64_MAX;
constexpr std::int64_t kInt64Min = INT64_MIN;

inline std::int64_t sat_add(std::int64_t a, std::int64_t b) {
  if (b > 0 && a > kInt64Max - b) return kInt64Max;
  if (b < 0 && a < kInt64Min - b) return kInt64Min;
  return a + b;
}

// One entry of a code table: an enum value and the name Python knows it by. Each table is defined
// once, next to its enum; the bindings export it as a native Python enum, which the Python layer
// reads instead of repeating the numbers.
template <class E>
struct Named {
  E value;
  const char* name;
};

template <class T>
struct View {
  const T* data = nullptr;
  std::size_t size = 0;
  const T& operator[](std::size_t i) const { return data[i]; }
  const T* begin() const { return data; }
  const T* end() const { return data + size; }
  bool empty() const { return size == 0; }
};

}  // namespace pylrcore
