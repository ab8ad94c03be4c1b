#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "check.hpp"
#include "pylrcore/step/nonfinite.hpp"

using namespace pylrcore;
using scan_detail::segment_elements;

namespace {

const double kNan = std::numeric_limits<double>::quiet_NaN();
const double kInf = std::numeric_limits<double>::infinity();

// Raw storage of one buffer of any dtype, filled from doubles (rounded to the dtype).
struct Raw {
  DType dtype;
  std::vector<unsigned char> bytes;
  std::size_t count() const { return bytes.size() / dtype_size(dtype); }
  Buffer buffer() const { return Buffer{bytes.empty() ? nullptr : bytes.data(), count(), dtype}; }
};

std::uint16_t half_bits(double x) {
  // Round-to-nearest-even conversion good enough for test values (normal range, zeros, inf, NaN).
  if (std::isnan(x)) return 0x7e00;
  const std::uint16_t sign = std::signbit(x) ? 0x8000 : 0;
  x = std::fabs(x);
  if (x == 0) return sign;
  if (std::isinf(x) || x >= 65520.0) return sign | 0x7c00;
  int e;
  std::frexp(x, &e);  // x = f * 2^e, f in [0.5, 1)
  const int exponent = std::max(e - 1, -14);
  const double m = std::nearbyint(std::ldexp(x, 10 - exponent));  // significand incl. implicit bit
  const auto significand = static_cast<std::uint32_t>(m);
  const std::uint32_t bits = (exponent == -14 && m < 1024)
                                 ? significand  // subnormal
                                 : (static_cast<std::uint32_t>(exponent + 15) << 10) + (significand - 1024);
  return static_cast<std::uint16_t>(sign | bits);
}

std::uint16_t bf16_bits(double x) {
  const float f = static_cast<float>(x);
  std::uint32_t b;
  std::memcpy(&b, &f, 4);
  return static_cast<std::uint16_t>(b >> 16);  // truncation: fine for the values used here
}

Raw make(DType dtype, const std::vector<double>& values) {
  Raw r{dtype, std::vector<unsigned char>(values.size() * dtype_size(dtype))};
  for (std::size_t i = 0; i < values.size(); ++i) {
    unsigned char* p = r.bytes.data() + i * dtype_size(dtype);
    switch (dtype) {
      case DType::F32: { const float f = static_cast<float>(values[i]); std::memcpy(p, &f, 4); break; }
      case DType::F64: std::memcpy(p, &values[i], 8); break;
      case DType::F16: { const std::uint16_t h = half_bits(values[i]); std::memcpy(p, &h, 2); break; }
      case DType::BF16: { const std::uint16_t h = bf16_bits(values[i]); std::memcpy(p, &h, 2); break; }
    }
  }
  return r;
}

const DType kAll[] = {DType::F32, DType::F64, DType::F16, DType::BF16};

std::vector<double> smooth_values(std::size_t n, unsigned seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> dist(-2.0, 2.0);
  std::vector<double> v(n);
  for (auto& x : v) x = dist(gen);
  return v;
}

// Reference: the squares of the values as stored, summed in long double.
long double reference_sumsq(const Raw& r) {
  long double s = 0;
  for (std::size_t i = 0; i < r.count(); ++i) {
    const unsigned char* p = r.bytes.data() + i * dtype_size(r.dtype);
    double x = 0;
    switch (r.dtype) {
      case DType::F32: { float f; std::memcpy(&f, p, 4); x = f; break; }
      case DType::F64: std::memcpy(&x, p, 8); break;
      case DType::F16: { std::uint16_t h; std::memcpy(&h, p, 2); x = scan_detail::half_to_float(h); break; }
      case DType::BF16: { std::uint16_t h; std::memcpy(&h, p, 2); x = scan_detail::bfloat16_to_float(h); break; }
    }
    s += static_cast<long double>(x) * x;
  }
  return s;
}

bool same(const ScanResult& a, const ScanResult& b) {
  const bool same_sum =
      std::memcmp(&a.sumsq, &b.sumsq, sizeof(double)) == 0 || (std::isnan(a.sumsq) && std::isnan(b.sumsq));
  return a.finite == b.finite && a.first_bad_buffer == b.first_bad_buffer && a.first_bad_index == b.first_bad_index &&
         a.nonfinite_count == b.nonfinite_count && same_sum;
}

}  // namespace

TEST(scan_half_to_float_is_exact_for_all_65536_inputs) {
  for (std::uint32_t h = 0; h < 65536; ++h) {
    const std::uint32_t e = (h >> 10) & 0x1f, m = h & 0x3ff;
    const double sign = (h & 0x8000) ? -1.0 : 1.0;
    const double expected = e == 0 ? sign * std::ldexp(m, -24)
                            : e == 31 ? (m == 0 ? sign * kInf : kNan)
                                      : sign * std::ldexp(1024 + m, static_cast<int>(e) - 25);
    const float got = scan_detail::half_to_float(static_cast<std::uint16_t>(h));
    if (std::isnan(expected)) {
      CHECK(std::isnan(got));
    } else if (!(got == expected && std::signbit(got) == std::signbit(expected))) {
      CHECK(got == expected);
      return;
    }
  }
}

TEST(scan_max_finite_values_are_finite) {
  const double f32_max = std::numeric_limits<float>::max();
  const double bf16_max = scan_detail::bfloat16_to_float(0x7f7f);
  struct Case { DType dtype; double max; };
  for (Case c : {Case{DType::F32, f32_max}, Case{DType::F16, 65504.0}, Case{DType::BF16, bf16_max}}) {
    for (std::size_t n : {1, 31, 32, 33, 1000}) {  // also whole lanes full of maxima
      std::vector<double> v(n, c.max);
      v[0] = -c.max;
      const Raw r = make(c.dtype, v);
      const Buffer b = r.buffer();
      for (bool want : {true, false}) {
        const ScanResult s = scan(&b, 1, want, 1);
        CHECK(s.finite && s.nonfinite_count == 0 && s.first_bad_buffer == -1);
        if (want) CHECK_CLOSE(s.sumsq, static_cast<double>(n) * c.max * c.max, 1e-15);
      }
    }
  }
  // float64: squares overflow, the values are still finite; sumsq is inf (the true sum is > DBL_MAX).
  const Raw r = make(DType::F64, {std::numeric_limits<double>::max(), 1e200, -1e300});
  const Buffer b = r.buffer();
  const ScanResult s = scan(&b, 1, true, 1);
  CHECK(s.finite && s.nonfinite_count == 0 && std::isinf(s.sumsq));
  CHECK(scan(&b, 1, false, 1).finite);
}

TEST(scan_finds_nan_and_inf_at_every_position_and_dtype) {
  for (DType dtype : kAll) {
    for (std::size_t n : {std::size_t{1}, std::size_t{7}, std::size_t{32}, std::size_t{33}, std::size_t{1000},
                          segment_elements(dtype) + 5}) {
      std::vector<std::size_t> positions{0, n - 1, n / 2, n - n % 32};  // first, last, middle, unaligned tail
      if (n > segment_elements(dtype)) {  // both sides of the first segment boundary
        positions.push_back(segment_elements(dtype) - 1);
        positions.push_back(segment_elements(dtype));
      }
      for (std::size_t pos : positions) {
        if (pos >= n) continue;
        for (double bad : {kNan, kInf, -kInf}) {
          std::vector<double> v = smooth_values(n, 1);
          v[pos] = bad;
          const Raw r = make(dtype, v);
          const Buffer b = r.buffer();
          for (bool want : {true, false}) {
            const ScanResult s = scan(&b, 1, want, 1);
            CHECK(!s.finite);
            CHECK(s.first_bad_buffer == 0);
            CHECK(s.first_bad_index == static_cast<std::int64_t>(pos));
            CHECK(s.nonfinite_count == 1);
            if (want) CHECK(std::isnan(bad) ? std::isnan(s.sumsq) : s.sumsq == kInf);
          }
        }
      }
    }
  }
}

TEST(scan_sumsq_ieee_semantics_with_bad_values) {
  const Raw only_inf = make(DType::F32, {1.0, -kInf, 2.0, kInf});
  const Raw nan_and_inf = make(DType::F16, {kInf, 1.0, kNan});
  const Buffer a = only_inf.buffer(), b = nan_and_inf.buffer();
  const ScanResult sa = scan(&a, 1, true, 1);
  CHECK(sa.sumsq == kInf && sa.nonfinite_count == 2 && sa.first_bad_index == 1);
  const ScanResult sb = scan(&b, 1, true, 1);
  CHECK(std::isnan(sb.sumsq) && sb.nonfinite_count == 2 && sb.first_bad_index == 0);
  const Buffer both[] = {a, b};
  CHECK(std::isnan(scan(both, 2, true, 1).sumsq));
}

TEST(scan_sumsq_matches_long_double_reference) {
  for (DType dtype : kAll) {
    for (std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{33}, std::size_t{100003}}) {
      const Raw r = make(dtype, smooth_values(n, 7));
      const Buffer b = r.buffer();
      const ScanResult s = scan(&b, 1, true, 1);
      CHECK(s.finite);
      CHECK_CLOSE(s.sumsq, static_cast<double>(reference_sumsq(r)), 1e-14);
    }
  }
}

TEST(scan_subnormals_are_finite_and_squared_exactly) {
  const float f32_tiny = std::numeric_limits<float>::denorm_min();
  const Raw f32 = make(DType::F32, {f32_tiny, -f32_tiny});
  const Raw f16 = make(DType::F16, {std::ldexp(1.0, -24), std::ldexp(3.0, -24)});  // smallest fp16 subnormals
  const Raw bf16 = make(DType::BF16, {static_cast<double>(f32_tiny) * 65536});
  const Buffer b32 = f32.buffer(), b16 = f16.buffer(), bbf = bf16.buffer();
  const ScanResult s32 = scan(&b32, 1, true, 1), s16 = scan(&b16, 1, true, 1), sbf = scan(&bbf, 1, true, 1);
  CHECK(s32.finite && s16.finite && sbf.finite);
  CHECK(s32.sumsq == 2.0 * static_cast<double>(f32_tiny) * f32_tiny);
  CHECK(s16.sumsq == std::ldexp(10.0, -48));
  CHECK(sbf.sumsq > 0);
}

TEST(scan_first_bad_is_first_in_buffer_then_element_order) {
  std::vector<Raw> raws;
  for (int i = 0; i < 12; ++i) raws.push_back(make(kAll[i % 4], smooth_values(5000 + 37 * i, i)));
  auto poison = [&](int buffer, std::size_t index) {
    Raw& r = raws[buffer];
    const std::size_t size = dtype_size(r.dtype);
    const Raw bad = make(r.dtype, {kNan});
    std::memcpy(r.bytes.data() + index * size, bad.bytes.data(), size);
  };
  poison(9, 3);
  poison(5, 4999);
  poison(5, 1200);
  poison(11, 0);
  std::vector<Buffer> buffers;
  for (const Raw& r : raws) buffers.push_back(r.buffer());
  for (unsigned threads : {1u, 2u, 3u, 8u}) {
    for (bool want : {true, false}) {
      const ScanResult s = scan(buffers, want, threads);
      CHECK(!s.finite && s.first_bad_buffer == 5 && s.first_bad_index == 1200 && s.nonfinite_count == 4);
    }
  }
}

TEST(scan_result_is_identical_for_every_thread_count) {
  std::vector<Raw> raws;
  for (int i = 0; i < 9; ++i) raws.push_back(make(kAll[i % 4], smooth_values(i == 4 ? 0 : 70000 + 999 * i, 100 + i)));
  std::vector<Buffer> buffers;
  for (const Raw& r : raws) buffers.push_back(r.buffer());
  for (bool want : {true, false}) {
    const ScanResult one = scan(buffers, want, 1);
    CHECK(one.finite);
    for (unsigned threads : {0u, 2u, 3u, 5u, 64u}) CHECK(same(scan(buffers, want, threads), one));
  }
  // And with bad values spread over several segments of the last (float32) buffer.
  const Raw bad = make(DType::F32, {kNan});
  for (std::size_t k : {std::size_t{3}, std::size_t{40000}, std::size_t{69000}})
    std::memcpy(raws[8].bytes.data() + 4 * k, bad.bytes.data(), 4);
  const ScanResult one = scan(buffers, true, 1);
  CHECK(raws[8].dtype == DType::F32);
  CHECK(!one.finite && one.first_bad_buffer == 8 && one.first_bad_index == 3 && one.nonfinite_count == 3);
  for (unsigned threads : {2u, 4u, 7u}) CHECK(same(scan(buffers, true, threads), one));
}

TEST(scan_empty_inputs_and_unaligned_data) {
  const ScanResult none = scan(nullptr, 0, true, 0);
  CHECK(none.finite && none.sumsq == 0 && none.first_bad_buffer == -1);
  const Buffer empties[] = {Buffer{nullptr, 0, DType::F32}, Buffer{nullptr, 0, DType::BF16}};
  const ScanResult e = scan(empties, 2, true, 4);
  CHECK(e.finite && e.sumsq == 0);

  // A float32 buffer starting one byte into an allocation: loads go through memcpy (UBSan-clean).
  std::vector<unsigned char> storage(1 + 4 * 101);
  for (std::size_t i = 0; i < 101; ++i) {
    const float f = (i == 100) ? std::numeric_limits<float>::infinity() : 2.0f;
    std::memcpy(storage.data() + 1 + 4 * i, &f, 4);
  }
  const Buffer odd{storage.data() + 1, 101, DType::F32};
  const ScanResult s = scan(&odd, 1, true, 1);
  CHECK(!s.finite && s.first_bad_index == 100);
  const Buffer odd_finite{storage.data() + 1, 100, DType::F32};
  CHECK(scan(&odd_finite, 1, true, 1).sumsq == 400.0);
}

TEST(scan_rejects_malformed_buffers) {
  const Buffer null_data{nullptr, 3, DType::F32};
  CHECK_THROWS(scan(&null_data, 1, true, 1), std::invalid_argument);
  float x = 1.0f;
  const Buffer bad_code{&x, 1, static_cast<DType>(9)};
  CHECK_THROWS_WITH(scan(&bad_code, 1, true, 1), std::invalid_argument, "buffers[0] has unknown dtype code 9");
  CHECK_THROWS(scan(nullptr, 2, true, 1), std::invalid_argument);
}

TEST(dtype_from_code_accepts_the_table_and_names_the_setting) {
  for (const Named<DType>& entry : kDTypeNames) CHECK(dtype_from_code(static_cast<int>(entry.value), "x") == entry.value);
  CHECK_THROWS_WITH(dtype_from_code(-1, "loss"), std::invalid_argument,
                    "loss has unknown dtype code -1 (0=float32, 1=float64, 2=float16, 3=bfloat16)");
  CHECK_THROWS_WITH(dtype_from_code(4, "buffers", 2), std::invalid_argument, "buffers[2] has unknown dtype code 4");
}
