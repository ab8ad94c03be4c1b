// The multi-tensor gradient check cut into fixed-size chunks: every NaN/Inf (count and the first
// one in table order) and the sum of squares of all elements, in one read of each byte.
//
// The CUDA kernel (cuda/check.cu) runs these functions per thread and per block; check_on_host()
// runs the very same functions, thread by thread and in the same order, on the CPU. So the host
// "twin" predicts the kernel's result bit for bit (given the device addresses, whose alignment
// decides which elements go through 16-byte loads), and the kernel's logic is tested without a GPU.
//
// Order of the sum (fixed, so the result is deterministic: the same for any grid size and run):
//   1. Tensors are cut into chunks of kChunkBytes, in table order (tensor, then position).
//   2. Inside a chunk, thread `lane` of kThreads adds the squares of its elements, in double, to
//      its own accumulator: first the head elements before the chunk's first 16-byte boundary,
//      then every kThreads-th 16-byte vector, then the tail.
//   3. The kThreads accumulators are folded by a fixed pairwise tree (fold_tree) into the chunk sum.
//   4. Chunk sums are added, chunk c to accumulator c % kThreads in increasing c, and those
//      accumulators are folded by the same tree.
// Squares of float32/16 and bfloat16 values are exact in double; float64 squares round once (the
// device uses __dmul_rn/__dadd_rn, never a fused multiply-add, so it rounds like the host).
// Error: about (count per thread + log2 kThreads + chunks per accumulator) x 1.1e-16 relative,
// 5e-14 for a billion float32 elements. Results differ from step/nonfinite.hpp's (another order) at that level.
//
// Non-finite values are found from the exponent bits (step/float_bits.hpp), exactly as the CPU scan does.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <sstream>
#include <vector>

#include "pylrcore/common.hpp"
#include "pylrcore/step/float_bits.hpp"
#include "pylrcore/hd.hpp"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "step/chunk_check.hpp splits 16-byte words into elements in little-endian order, like the GPU"
#endif

namespace pylrcore::chunk_check {

// 64 KiB per chunk: 16 vector loads per thread of a 256-thread block, enough bytes in flight, and
// few enough chunks that their sums (one double each) are small next to the gradients.
constexpr std::size_t kChunkBytes = std::size_t{64} << 10;
constexpr unsigned kThreads = 256;  // threads per block; a power of two (fold_tree)
constexpr std::size_t kVectorBytes = 16;

// The first bad element is kept as one 64-bit key, (tensor << kIndexBits) | element, so that a
// single atomicMin over all blocks finds the first one in table order.
constexpr unsigned kIndexBits = 40;
constexpr std::uint64_t kMaxElements = std::uint64_t{1} << kIndexBits;         // per tensor
constexpr std::uint64_t kMaxTensors = (std::uint64_t{1} << (64 - kIndexBits)) - 1;
constexpr std::uint64_t kNoBad = ~std::uint64_t{0};

PYLRCORE_HD inline std::uint64_t bad_key(std::uint64_t tensor, std::uint64_t element) {
  return (tensor << kIndexBits) | element;
}
PYLRCORE_HD inline std::uint64_t key_tensor(std::uint64_t key) { return key >> kIndexBits; }
PYLRCORE_HD inline std::uint64_t key_element(std::uint64_t key) { return key & (kMaxElements - 1); }

PYLRCORE_HD inline std::size_t chunk_elements(DType dtype) { return kChunkBytes / dtype_size(dtype); }

// What one thread finds in its share of a chunk.
struct Partial {
  double sumsq = 0.0;
  std::uint64_t nonfinite = 0;
  std::uint64_t first_bad = kNoBad;  // element index within the chunk
};

PYLRCORE_HD inline double add_square(double acc, double x) {
#if defined(__CUDA_ARCH__)
  return __dadd_rn(acc, __dmul_rn(x, x));  // intrinsics are never contracted into an FMA
#else
  return acc + x * x;  // the core is built with -ffp-contract=off
#endif
}

PYLRCORE_HD inline double add(double acc, double x) {
#if defined(__CUDA_ARCH__)
  return __dadd_rn(acc, x);
#else
  return acc + x;
#endif
}

template <class Bits>
PYLRCORE_HD inline Bits load_element(const unsigned char* p) {
#if defined(__CUDA_ARCH__)
  return __ldg(reinterpret_cast<const Bits*>(p));  // element-aligned (validate_table); read-only path
#else
  Bits b;
  std::memcpy(&b, p, sizeof b);
  return b;
#endif
}

// 16 bytes as four little-endian 32-bit words: one 128-bit load on the device.
struct Words {
  std::uint32_t w[4];
};

PYLRCORE_HD inline Words load_words(const unsigned char* p) {
#if defined(__CUDA_ARCH__)
  const uint4 v = __ldg(reinterpret_cast<const uint4*>(p));  // p is 16-byte aligned
  return Words{{v.x, v.y, v.z, v.w}};
#else
  Words out;
  std::memcpy(out.w, p, sizeof out.w);
  return out;
#endif
}

template <class Bits>
PYLRCORE_HD inline Bits element_of(const Words& v, unsigned k) {
  if constexpr (sizeof(Bits) == 2) {
    return static_cast<Bits>(v.w[k >> 1] >> ((k & 1u) * 16u));
  } else if constexpr (sizeof(Bits) == 4) {
    return v.w[k];
  } else {
    return static_cast<Bits>(v.w[2 * k] | (static_cast<std::uint64_t>(v.w[2 * k + 1]) << 32));
  }
}

template <class Format>
PYLRCORE_HD inline void accumulate(Partial& part, typename Format::Bits b, std::uint64_t index) {
  part.sumsq = add_square(part.sumsq, Format::widen(b));
  if (float_bits::is_nonfinite_bits<Format>(b)) {
    ++part.nonfinite;
    if (index < part.first_bad) part.first_bad = index;
  }
}

// Thread `lane` of `lanes`' share of a chunk of `count` elements at `chunk`, whose device address
// is `misalign` bytes past a 16-byte boundary: the head elements before the boundary, every
// lanes-th whole vector after it, then the tail; always in this order (see the file comment).
template <class Format>
PYLRCORE_HD inline Partial thread_partial(const unsigned char* chunk, std::size_t count, unsigned misalign,
                                          unsigned lane, unsigned lanes) {
  using Bits = typename Format::Bits;
  constexpr unsigned kPerVector = kVectorBytes / sizeof(Bits);
  Partial part;
  std::size_t head = ((kVectorBytes - misalign) % kVectorBytes) / sizeof(Bits);
  if (head > count) head = count;
  const std::size_t vectors = (count - head) / kPerVector;
  const std::size_t tail = head + vectors * kPerVector;
  for (std::size_t i = lane; i < head; i += lanes) accumulate<Format>(part, load_element<Bits>(chunk + i * sizeof(Bits)), i);
  const unsigned char* body = chunk + head * sizeof(Bits);
#if defined(__CUDA_ARCH__)
#pragma unroll 4  // several 16-byte loads in flight per thread
#endif
  for (std::size_t v = lane; v < vectors; v += lanes) {
    const Words words = load_words(body + v * kVectorBytes);
    for (unsigned k = 0; k < kPerVector; ++k)
      accumulate<Format>(part, element_of<Bits>(words, k), head + v * kPerVector + k);
  }
  for (std::size_t i = tail + lane; i < count; i += lanes)
    accumulate<Format>(part, load_element<Bits>(chunk + i * sizeof(Bits)), i);
  return part;
}

PYLRCORE_HD inline Partial thread_partial(DType dtype, const unsigned char* chunk, std::size_t count, unsigned misalign,
                                          unsigned lane, unsigned lanes) {
  switch (dtype) {
    case DType::F32: return thread_partial<float_bits::F32>(chunk, count, misalign, lane, lanes);
    case DType::F64: return thread_partial<float_bits::F64>(chunk, count, misalign, lane, lanes);
    case DType::F16: return thread_partial<float_bits::F16>(chunk, count, misalign, lane, lanes);
    case DType::BF16: return thread_partial<float_bits::BF16>(chunk, count, misalign, lane, lanes);
  }
  return Partial{};
}

// The pairwise tree both the kernel (shared memory, then warp shuffles) and the twin fold with:
// at width w = n/2, n/4, ..., 1, value[l] += value[l + w] for l < w.
inline double fold_tree(double* values, unsigned n) {
  for (unsigned width = n / 2; width > 0; width /= 2)
    for (unsigned l = 0; l < width; ++l) values[l] = add(values[l], values[l + width]);
  return values[0];
}

// One chunk of the table: which tensor, and its first element.
struct ChunkRef {
  std::uint32_t tensor;
  std::uint64_t begin;
};

// A tensor of the table as the device sees it.
struct TensorRef {
  std::uint64_t address = 0;  // device address (only its alignment matters to the host twin)
  std::uint64_t count = 0;
  DType dtype = DType::F32;
};

inline void validate_table(const TensorRef* tensors, std::size_t n) {
  if (n > 0 && tensors == nullptr) fail("tensors is null but n > 0");
  if (n > kMaxTensors) {
    std::ostringstream s;
    s << "at most " << kMaxTensors << " tensors per table, got " << n;
    fail(s.str());
  }
  // Runs on every repoint (every step with new gradient tensors): the message is only built on failure.
  auto bad = [](std::size_t i, auto&& describe) {
    std::ostringstream s;
    s << "tensors[" << i << "]: ";
    describe(s);
    fail(s.str());
  };
  for (std::size_t i = 0; i < n; ++i) {
    const TensorRef& t = tensors[i];
    dtype_from_code(static_cast<int>(t.dtype), "tensors", i);
    if (t.count > 0 && t.address == 0) bad(i, [&](std::ostream& s) { s << "null address with " << t.count << " elements"; });
    if (t.count >= kMaxElements)
      bad(i, [&](std::ostream& s) { s << t.count << " elements; at most 2^" << kIndexBits << " - 1 per tensor"; });
    if (t.address % dtype_size(t.dtype) != 0)
      bad(i, [&](std::ostream& s) {
        s << "address 0x" << std::hex << t.address << std::dec << " is not aligned to its " << dtype_size(t.dtype)
          << "-byte elements";
      });
  }
}

// The chunks of a table, in the fixed order of the sum. Empty tensors have none.
inline std::vector<ChunkRef> plan_chunks(const TensorRef* tensors, std::size_t n) {
  std::vector<ChunkRef> chunks;
  for (std::size_t i = 0; i < n; ++i) {
    const std::size_t per = chunk_elements(tensors[i].dtype);
    for (std::uint64_t begin = 0; begin < tensors[i].count; begin += per)
      chunks.push_back(ChunkRef{static_cast<std::uint32_t>(i), begin});
  }
  return chunks;
}

// What one launch reports (the kernel writes the same numbers to device memory).
struct CheckSummary {
  double sumsq = 0.0;
  std::uint64_t nonfinite = 0;
  std::int64_t first_bad_tensor = -1;  // (tensor, element) of the first NaN/Inf in table order
  std::int64_t first_bad_index = -1;
  bool found() const { return nonfinite > 0; }
};

// The host twin of the kernel: `data[i]` holds a host copy of tensor i, tensors[i] its device
// address, count and dtype. Same chunks, same per-thread order, same folds: bit-identical sumsq.
inline CheckSummary check_on_host(const void* const* data, const TensorRef* tensors, std::size_t n) {
  validate_table(tensors, n);
  for (std::size_t i = 0; i < n; ++i)
    if (tensors[i].count > 0 && data[i] == nullptr) fail("check_on_host: null host data for a non-empty tensor");
  const std::vector<ChunkRef> chunks = plan_chunks(tensors, n);
  std::vector<double> chunk_sums(chunks.size());
  std::uint64_t nonfinite = 0, first = kNoBad;
  double lanes[kThreads];
  for (std::size_t c = 0; c < chunks.size(); ++c) {
    const TensorRef& t = tensors[chunks[c].tensor];
    const std::size_t size = dtype_size(t.dtype);
    const std::size_t count = static_cast<std::size_t>(
        std::min<std::uint64_t>(chunk_elements(t.dtype), t.count - chunks[c].begin));
    const unsigned char* p = static_cast<const unsigned char*>(data[chunks[c].tensor]) + chunks[c].begin * size;
    const auto misalign = static_cast<unsigned>((t.address + chunks[c].begin * size) % kVectorBytes);
    for (unsigned lane = 0; lane < kThreads; ++lane) {
      const Partial part = thread_partial(t.dtype, p, count, misalign, lane, kThreads);
      lanes[lane] = part.sumsq;
      if (part.nonfinite > 0) {
        nonfinite += part.nonfinite;
        const std::uint64_t key = bad_key(chunks[c].tensor, chunks[c].begin + part.first_bad);
        if (key < first) first = key;
      }
    }
    chunk_sums[c] = fold_tree(lanes, kThreads);
  }
  for (unsigned lane = 0; lane < kThreads; ++lane) lanes[lane] = 0.0;
  for (std::size_t c = 0; c < chunk_sums.size(); ++c) lanes[c % kThreads] = add(lanes[c % kThreads], chunk_sums[c]);
  CheckSummary out;
  out.sumsq = fold_tree(lanes, kThreads);
  out.nonfinite = nonfinite;
  if (first != kNoBad) {
    out.first_bad_tensor = static_cast<std::int64_t>(key_tensor(first));
    out.first_bad_index = static_cast<std::int64_t>(key_element(first));
  }
  return out;
}

}  // namespace pylrcore::chunk_check
