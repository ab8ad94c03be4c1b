// The CUDA check kernel's per-chunk logic, run on the CPU by its host twin (step/chunk_check.hpp), and
// compared with the CPU scan (step/nonfinite.hpp) on the same buffers.
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "check.hpp"
#include "pylrcore/step/chunk_check.hpp"
#include "pylrcore/step/nonfinite.hpp"

using namespace pylrcore;
using namespace pylrcore::chunk_check;

namespace {

const double kNan = std::numeric_limits<double>::quiet_NaN();
const double kInf = std::numeric_limits<double>::infinity();
const DType kAll[] = {DType::F32, DType::F64, DType::F16, DType::BF16};

std::uint32_t float_bits_of(float f) {
  std::uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}

// float16 bits of a value that float16 represents exactly (normal or zero), or of +-inf / NaN.
std::uint16_t half_bits(double x) {
  if (std::isnan(x)) return 0x7e00;
  const std::uint16_t sign = std::signbit(x) ? 0x8000 : 0;
  if (std::isinf(x)) return sign | 0x7c00;
  if (x == 0) return sign;
  const std::uint32_t f = float_bits_of(static_cast<float>(std::fabs(x)));
  const std::uint32_t exponent = (f >> 23) - 127 + 15;
  return static_cast<std::uint16_t>(sign | (exponent << 10) | ((f & 0x7fffffu) >> 13));
}

std::uint16_t bf16_bits(double x) {
  if (std::isnan(x)) return 0x7fc0;
  return static_cast<std::uint16_t>(float_bits_of(static_cast<float>(x)) >> 16);
}

// One tensor's bytes. `offset` bytes of padding come first, so the data can start unaligned on the
// host too; the twin is told the device address separately.
struct Raw {
  DType dtype;
  std::size_t offset;
  std::vector<unsigned char> bytes;
  std::size_t count() const { return (bytes.size() - offset) / dtype_size(dtype); }
  const unsigned char* data() const { return bytes.data() + offset; }
  void set(std::size_t i, double x) {
    unsigned char* p = bytes.data() + offset + i * dtype_size(dtype);
    switch (dtype) {
      case DType::F32: { const float f = static_cast<float>(x); std::memcpy(p, &f, 4); break; }
      case DType::F64: std::memcpy(p, &x, 8); break;
      case DType::F16: { const std::uint16_t h = half_bits(x); std::memcpy(p, &h, 2); break; }
      case DType::BF16: { const std::uint16_t h = bf16_bits(x); std::memcpy(p, &h, 2); break; }
    }
  }
};

// Values k/64 for |k| <= 128: exact in every format, so all four dtypes hold the same numbers.
Raw make(DType dtype, std::size_t n, unsigned seed, std::size_t offset = 0) {
  Raw r{dtype, offset, std::vector<unsigned char>(offset + n * dtype_size(dtype))};
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int> k(-128, 128);
  for (std::size_t i = 0; i < n; ++i) r.set(i, k(gen) / 64.0);
  return r;
}

// Runs the twin with each tensor placed at `device_misalign[i]` bytes past a 16-byte boundary.
CheckSummary twin(const std::vector<Raw>& raws, const std::vector<unsigned>& device_misalign) {
  std::vector<const void*> data;
  std::vector<TensorRef> refs;
  for (std::size_t i = 0; i < raws.size(); ++i) {
    data.push_back(raws[i].count() ? raws[i].data() : nullptr);
    const std::uint64_t address = raws[i].count() ? 0x7f0000000000ull + 0x100000ull * i + device_misalign[i] : 0;
    refs.push_back(TensorRef{address, raws[i].count(), raws[i].dtype});
  }
  return check_on_host(data.data(), refs.data(), refs.size());
}

CheckSummary twin(const std::vector<Raw>& raws) { return twin(raws, std::vector<unsigned>(raws.size(), 0)); }

ScanResult cpu_scan(const std::vector<Raw>& raws) {
  std::vector<Buffer> buffers;
  for (const Raw& r : raws) buffers.push_back(Buffer{r.count() ? r.data() : nullptr, r.count(), r.dtype});
  return scan(buffers, true, 1);
}

bool agrees_with_scan(const CheckSummary& c, const ScanResult& s) {
  const bool sums = (std::isnan(c.sumsq) && std::isnan(s.sumsq)) || check::close(c.sumsq, s.sumsq, 1e-13);
  return sums && c.found() == !s.finite && static_cast<std::int64_t>(c.nonfinite) == s.nonfinite_count &&
         c.first_bad_tensor == s.first_bad_buffer && c.first_bad_index == s.first_bad_index;
}

bool bit_equal(double a, double b) { return std::memcmp(&a, &b, sizeof a) == 0; }

}  // namespace

TEST(chunk_check_every_element_is_read_once_for_every_alignment) {
  // All ones: the sum of squares counts the elements; a NaN at each position in turn finds it.
  for (DType dtype : kAll) {
    const std::size_t size = dtype_size(dtype);
    for (std::size_t n : {std::size_t{1}, std::size_t{2}, std::size_t{7}, std::size_t{9}, std::size_t{64},
                          std::size_t{515}}) {
      for (unsigned misalign = 0; misalign < kVectorBytes; misalign += static_cast<unsigned>(size)) {
        Raw r{dtype, 0, std::vector<unsigned char>(n * size)};
        for (std::size_t i = 0; i < n; ++i) r.set(i, 1.0);
        const CheckSummary ok = twin({r}, {misalign});
        CHECK(ok.sumsq == static_cast<double>(n) && !ok.found());
        for (std::size_t pos = 0; pos < n; ++pos) {
          r.set(pos, kNan);
          const CheckSummary bad = twin({r}, {misalign});
          r.set(pos, 1.0);
          if (!(bad.nonfinite == 1 && bad.first_bad_tensor == 0 && bad.first_bad_index == static_cast<std::int64_t>(pos))) {
            CHECK(bad.first_bad_index == static_cast<std::int64_t>(pos));
            return;
          }
        }
      }
    }
  }
}

TEST(chunk_check_finds_nan_and_inf_at_first_last_tail_and_chunk_edges) {
  for (DType dtype : kAll) {
    const std::size_t per = chunk_elements(dtype);
    for (std::size_t n : {std::size_t{1}, std::size_t{33}, std::size_t{1000}, per, per + 5, 2 * per + 3}) {
      std::vector<std::size_t> positions{0, n - 1, n / 2, n - n % 8};  // first, last, middle, scalar tail
      if (n > per) positions.insert(positions.end(), {per - 1, per});
      for (std::size_t pos : positions) {
        if (pos >= n) continue;
        for (double bad : {kNan, kInf, -kInf}) {
          for (std::size_t offset : {std::size_t{0}, dtype_size(dtype)}) {  // aligned and unaligned starts
            Raw r = make(dtype, n, 3, offset);
            r.set(pos, bad);
            const auto misalign = static_cast<unsigned>(offset);
            const CheckSummary c = twin({r}, {misalign});
            CHECK(c.found() && c.nonfinite == 1);
            CHECK(c.first_bad_tensor == 0 && c.first_bad_index == static_cast<std::int64_t>(pos));
            CHECK(std::isnan(bad) ? std::isnan(c.sumsq) : c.sumsq == kInf);
            CHECK(agrees_with_scan(c, cpu_scan({r})));
          }
        }
      }
    }
  }
}

TEST(chunk_check_largest_finite_values_are_finite) {
  struct Case { DType dtype; double max; };
  const double bf16_max = float_bits::bfloat16_to_float(0x7f7f);
  for (Case c : {Case{DType::F32, FLT_MAX}, Case{DType::F16, 65504.0}, Case{DType::BF16, bf16_max},
                 Case{DType::F64, DBL_MAX}}) {
    for (std::size_t n : {std::size_t{1}, std::size_t{9}, std::size_t{100}}) {
      Raw r{c.dtype, 0, std::vector<unsigned char>(n * dtype_size(c.dtype))};
      for (std::size_t i = 0; i < n; ++i) r.set(i, i % 2 ? -c.max : c.max);
      const CheckSummary s = twin({r});
      CHECK(!s.found() && s.nonfinite == 0 && s.first_bad_tensor == -1);
      if (c.dtype == DType::F64) CHECK(s.sumsq == kInf);  // the squares overflow; the values are finite
      else CHECK_CLOSE(s.sumsq, static_cast<double>(n) * c.max * c.max, 1e-15);
      CHECK(agrees_with_scan(s, cpu_scan({r})));
    }
  }
}

TEST(chunk_check_mixed_table_matches_the_cpu_scan) {
  std::vector<Raw> raws;
  std::vector<unsigned> misalign;
  for (int i = 0; i < 14; ++i) {
    const DType dtype = kAll[i % 4];
    const std::size_t n = i == 3 ? 0 : i == 6 ? 1 : 20000 + 7919 * static_cast<std::size_t>(i);
    raws.push_back(make(dtype, n, 10 + i, i % 3));
    misalign.push_back(static_cast<unsigned>((i * dtype_size(dtype)) % kVectorBytes));
  }
  const CheckSummary clean = twin(raws, misalign);
  CHECK(!clean.found());
  CHECK(agrees_with_scan(clean, cpu_scan(raws)));
  // The sum has a fixed order: the same bits again, whatever else ran before.
  CHECK(bit_equal(twin(raws, misalign).sumsq, clean.sumsq));

  raws[9].set(40000, kInf);
  raws[5].set(raws[5].count() - 1, -kInf);
  raws[5].set(17, kNan);
  raws[6].set(0, kInf);
  const CheckSummary bad = twin(raws, misalign);
  CHECK(bad.nonfinite == 4 && bad.first_bad_tensor == 5 && bad.first_bad_index == 17 && std::isnan(bad.sumsq));
  CHECK(agrees_with_scan(bad, cpu_scan(raws)));
}

TEST(chunk_check_sum_of_squares_is_close_to_exact) {
  for (DType dtype : kAll) {
    const Raw r = make(dtype, 300001, 5, 2 * dtype_size(dtype));
    long double exact = 0;
    for (std::size_t i = 0; i < r.count(); ++i) {
      double x = 0;
      const unsigned char* p = r.data() + i * dtype_size(dtype);
      switch (dtype) {
        case DType::F32: { float f; std::memcpy(&f, p, 4); x = f; break; }
        case DType::F64: std::memcpy(&x, p, 8); break;
        case DType::F16: { std::uint16_t h; std::memcpy(&h, p, 2); x = float_bits::half_to_float(h); break; }
        case DType::BF16: { std::uint16_t h; std::memcpy(&h, p, 2); x = float_bits::bfloat16_to_float(h); break; }
      }
      exact += static_cast<long double>(x) * x;
    }
    // Values k/64 have exact squares and exact partial sums below 2^53 / 64^2: the result is exact.
    const auto misalign = static_cast<unsigned>(dtype_size(dtype) == 8 ? 8 : 4);
    CHECK(twin({r}, {misalign}).sumsq == static_cast<double>(exact));
  }
}

TEST(chunk_check_empty_tables_and_tensors) {
  const CheckSummary none = check_on_host(nullptr, nullptr, 0);
  CHECK(none.sumsq == 0 && !none.found() && none.first_bad_tensor == -1 && none.first_bad_index == -1);
  const Raw empty{DType::BF16, 0, {}};
  const CheckSummary e = twin({empty, empty});
  CHECK(e.sumsq == 0 && !e.found());
  CHECK(plan_chunks(nullptr, 0).empty());
}

TEST(chunk_check_chunks_cover_tensors_in_table_order) {
  const TensorRef refs[] = {{0x1000, 0, DType::F32}, {0x2000, 16384, DType::F32}, {0x3000, 16385, DType::F32},
                            {0x4000, 70000, DType::BF16}};
  const std::vector<ChunkRef> chunks = plan_chunks(refs, 4);
  CHECK(chunks.size() == 1 + 2 + 3);
  CHECK(chunks[0].tensor == 1 && chunks[0].begin == 0);
  CHECK(chunks[2].tensor == 2 && chunks[2].begin == 16384);
  CHECK(chunks[5].tensor == 3 && chunks[5].begin == 65536);
  CHECK(key_tensor(bad_key(5, 123)) == 5 && key_element(bad_key(5, 123)) == 123);
  CHECK(bad_key(1, 0) > bad_key(0, kMaxElements - 1));
}

TEST(chunk_check_rejects_malformed_tables) {
  const TensorRef misaligned{0x1002, 4, DType::F32};
  CHECK_THROWS(validate_table(&misaligned, 1), std::invalid_argument);
  const TensorRef null_address{0, 4, DType::F16};
  CHECK_THROWS(validate_table(&null_address, 1), std::invalid_argument);
  const TensorRef tensors[] = {{0x1000, 4, DType::F32}, {0x1000, 4, static_cast<DType>(7)}};
  CHECK_THROWS_WITH(validate_table(tensors, 2), std::invalid_argument,
                    "tensors[1] has unknown dtype code 7 (0=float32, 1=float64, 2=float16, 3=bfloat16)");
  const TensorRef huge{0x1000, kMaxElements, DType::F16};
  CHECK_THROWS(validate_table(&huge, 1), std::invalid_argument);
  const TensorRef empty_null{0, 0, DType::F64};
  validate_table(&empty_null, 1);  // an empty tensor may have no storage
  CHECK_THROWS(validate_table(nullptr, 1), std::invalid_argument);
}
