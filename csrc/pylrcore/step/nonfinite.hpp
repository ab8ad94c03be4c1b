// One pass over many contiguous floating-point buffers: are they all finite, where is the first
// NaN/Inf, how many are there, and (optionally) the sum of squares of every element, for a global
// gradient norm. Each byte is read once; large inputs are split over threads.
//
// Exactness
//   * Finiteness is decided on the bits (exponent all ones), never by a float comparison, so the
//     largest finite values (FLT_MAX, 65504 in fp16, the bf16 maximum) are finite.
//   * Every square is computed in double. For float32, float16 and bfloat16 inputs the square is
//     exact (at most 2 x 24 significant bits, well inside double's range), so the only rounding is
//     the double summation: at most kSegmentBytes / size / kLanes + 5 additions per lane inside a
//     segment, then a compensated sum over segments. Worst-case relative error: 5.8e-14 (float32),
//     1.1e-13 (16-bit), whatever the input size. float64 squares round once each (2.9e-14 in all),
//     and overflow to inf above ~1.3e154.
//   * Because squares of narrow floats cannot overflow, a segment's double sum is finite exactly
//     when all its elements are; only a non-finite segment sum is re-read element by element to
//     locate and count the bad values. float64 segments whose sum overflowed are re-read too, and
//     come out finite with sumsq = inf (the true sum is above DBL_MAX).
//   * sumsq follows IEEE semantics when bad values are present: NaN if any element is NaN,
//     otherwise +inf if any element is +-inf.
//
// Determinism
//   Buffers are cut into fixed segments of kSegmentBytes (independent of the thread count). Each
//   segment is summed in kLanes interleaved double lanes folded in a fixed order, and segment sums
//   are added in (buffer, segment) order. So the result is bit-identical for any thread count and
//   for every instruction-set clone below (the lanes are explicit in the source, no FMA is needed:
//   squares of narrow floats are exact).
//
// Speed
//   The inner loops are branch-free and written lane by lane, so GCC vectorises them at -O3. On
//   x86-64 with GCC, the kernels are compiled for baseline x86-64, AVX2 and x86-64-v4 (AVX-512)
//   and picked at load time (target_clones), so one wheel runs everywhere and uses the machine.
//   Large inputs are shared by threads that claim runs of segments from a counter (see scan()).
#pragma once
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cmath>
#include <cstddef>
#include <cstdlib>
#include <cstdint>
#include <cstring>
#include <exception>
#include <limits>
#include <memory>
#include <mutex>
#include <sstream>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <dlfcn.h>
#endif
#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#define PYLRCORE_HAVE_GETPID 1
#endif
#if defined(__x86_64__) || defined(_M_X64)
#include <emmintrin.h>
#endif

#include "pylrcore/common.hpp"
#include "pylrcore/cpus.hpp"
#include "pylrcore/step/float_bits.hpp"

// (Not under ThreadSanitizer: its runtime is not up yet when the ifunc resolvers run, and crashes.)
#if defined(__x86_64__) && defined(__ELF__) && defined(__GNUC__) && !defined(__clang__) && \
    !defined(__SANITIZE_THREAD__) && !defined(PYLRCORE_NO_TARGET_CLONES)
// flatten: inline the generic kernels into each clone, so they are compiled for its instruction set.
#define PYLRCORE_SCAN_KERNEL __attribute__((target_clones("default", "avx2", "arch=x86-64-v4"), flatten))
#else
#define PYLRCORE_SCAN_KERNEL
#endif

namespace pylrcore {

// A contiguous buffer of `count` elements; `data` may be unaligned, and null when count == 0.
struct Buffer {
  const void* data = nullptr;
  std::size_t count = 0;
  DType dtype = DType::F32;
};

struct ScanResult {
  bool finite = true;
  std::int64_t first_bad_buffer = -1;  // (buffer, element) of the first NaN/Inf in buffer order,
  std::int64_t first_bad_index = -1;   // then element order; -1 when finite
  std::int64_t nonfinite_count = 0;    // number of NaN/Inf elements over all buffers
  double sumsq = 0.0;                  // sum of squares (0 when not requested)
};

namespace scan_detail {

// Work unit: fixed so that sums do not depend on how the work is split over threads.
constexpr std::size_t kSegmentBytes = std::size_t{64} << 10;
// Interleaved double accumulators per segment: enough independent adds to hide latency, and for
// 16-bit inputs enough elements per step that the vectoriser uses full-width loads.
// (32 lanes: 2x faster than 16 on 16-bit inputs, equal on float32/64.)
constexpr std::size_t kLanes = 32;
// Segments a thread claims at a time (1 MiB of float32): long enough sequential runs for the
// hardware prefetchers, short enough to balance.
constexpr std::size_t kSegmentsPerClaim = 16;
// Below this many bytes per thread, starting a thread costs more than it saves. Measured on a
// 2-core AMD EPYC VM (float32, medians of 1 vs 2 threads, other core idle): a thread costs 20-60 us
// there (waking the idle vCPU); one core reads 60-80 GB/s from cache, ~32 GB/s from DRAM; two
// threads lose below 8 MB, break even at 8-16 MB and gain 1.2-1.5x from 16 to 100 MB.
constexpr std::size_t kMinBytesPerThread = std::size_t{8} << 20;

template <class Bits>
inline Bits load_bits(const unsigned char* p) {
  Bits b;
  std::memcpy(&b, p, sizeof b);  // unaligned-safe; compiles to a plain load
  return b;
}

// The formats and their bit tests live in step/float_bits.hpp, shared with the CUDA check kernel.
using float_bits::BF16;
using float_bits::bfloat16_to_float;
using float_bits::F16;
using float_bits::F32;
using float_bits::F64;
using float_bits::half_to_float;
using float_bits::is_nonfinite_bits;

constexpr std::size_t kNone = std::numeric_limits<std::size_t>::max();

struct SegmentResult {
  double sumsq = 0.0;
  std::size_t first_bad = kNone;  // index within the segment
  std::size_t nonfinite_count = 0;
};

// Slow path, only for segments known (or suspected, for float64 overflow) to hold a bad value.
template <class Format>
inline void locate_nonfinite(const unsigned char* p, std::size_t count, SegmentResult& out) {
  using Bits = typename Format::Bits;
  for (std::size_t i = 0; i < count; ++i) {
    if (is_nonfinite_bits<Format>(load_bits<Bits>(p + i * sizeof(Bits)))) {
      if (out.first_bad == kNone) out.first_bad = i;
      ++out.nonfinite_count;
    }
  }
}

// Fixed-shape fold of the lanes (pairwise), the same in every clone.
inline double fold_lanes(double (&lanes)[kLanes]) {
  for (std::size_t width = kLanes / 2; width > 0; width /= 2)
    for (std::size_t l = 0; l < width; ++l) lanes[l] += lanes[l + width];
  return lanes[0];
}

template <class Format>
inline SegmentResult sumsq_segment(const unsigned char* p, std::size_t count) {
  using Bits = typename Format::Bits;
  double lanes[kLanes] = {};
  const std::size_t whole = count - count % kLanes;
  for (std::size_t i = 0; i < whole; i += kLanes)
    for (std::size_t l = 0; l < kLanes; ++l) {
      const double x = Format::widen(load_bits<Bits>(p + (i + l) * sizeof(Bits)));
      lanes[l] += x * x;
    }
  for (std::size_t i = whole; i < count; ++i) {
    const double x = Format::widen(load_bits<Bits>(p + i * sizeof(Bits)));
    lanes[i - whole] += x * x;
  }
  SegmentResult out;
  out.sumsq = fold_lanes(lanes);
  // NaN and inf propagate through the sum of non-negative squares, so a finite sum proves every
  // element finite. A non-finite sum is either a bad element or (float64 only) overflow.
  if (!std::isfinite(out.sumsq)) locate_nonfinite<Format>(p, count, out);
  return out;
}

// Finiteness only: OR together (magnitude + (sign - exponent)) per lane; the top bit of a lane is
// set exactly when some magnitude reached the all-ones exponent. Integer-only, cheaper than widening.
template <class Format>
inline SegmentResult check_segment(const unsigned char* p, std::size_t count) {
  using Bits = typename Format::Bits;
  constexpr Bits kSign = static_cast<Bits>(Format::kMagnitude + 1u);
  constexpr Bits kOffset = static_cast<Bits>(kSign - Format::kExponent);
  constexpr std::size_t kBitLanes = 128 / sizeof(Bits);
  Bits lanes[kBitLanes] = {};
  const std::size_t whole = count - count % kBitLanes;
  for (std::size_t i = 0; i < whole; i += kBitLanes)
    for (std::size_t l = 0; l < kBitLanes; ++l) {
      const Bits b = load_bits<Bits>(p + (i + l) * sizeof(Bits));
      lanes[l] |= static_cast<Bits>(static_cast<Bits>(b & Format::kMagnitude) + kOffset);
    }
  Bits any = 0;
  for (std::size_t i = whole; i < count; ++i)
    any |= static_cast<Bits>(static_cast<Bits>(load_bits<Bits>(p + i * sizeof(Bits)) & Format::kMagnitude) + kOffset);
  for (std::size_t l = 0; l < kBitLanes; ++l) any |= lanes[l];
  SegmentResult out;
  if (any & kSign) locate_nonfinite<Format>(p, count, out);
  return out;
}

// The compiled entry points, one per (dtype, job): the only functions cloned per instruction set.
#define PYLRCORE_SCAN_ENTRY(name, kernel, Format)                                         \
  PYLRCORE_SCAN_KERNEL inline SegmentResult name(const unsigned char* p, std::size_t n) { \
    return kernel<Format>(p, n);                                                          \
  }
PYLRCORE_SCAN_ENTRY(sumsq_f32, sumsq_segment, F32)
PYLRCORE_SCAN_ENTRY(sumsq_f64, sumsq_segment, F64)
PYLRCORE_SCAN_ENTRY(sumsq_f16, sumsq_segment, F16)
PYLRCORE_SCAN_ENTRY(sumsq_bf16, sumsq_segment, BF16)
PYLRCORE_SCAN_ENTRY(check_f32, check_segment, F32)
PYLRCORE_SCAN_ENTRY(check_f64, check_segment, F64)
PYLRCORE_SCAN_ENTRY(check_f16, check_segment, F16)
PYLRCORE_SCAN_ENTRY(check_bf16, check_segment, BF16)
#undef PYLRCORE_SCAN_ENTRY

inline SegmentResult scan_segment(const unsigned char* p, std::size_t n, DType dtype, bool want_sumsq) {
  switch (dtype) {
    case DType::F32: return want_sumsq ? sumsq_f32(p, n) : check_f32(p, n);
    case DType::F64: return want_sumsq ? sumsq_f64(p, n) : check_f64(p, n);
    case DType::F16: return want_sumsq ? sumsq_f16(p, n) : check_f16(p, n);
    case DType::BF16: return want_sumsq ? sumsq_bf16(p, n) : check_bf16(p, n);
  }
  return {};
}

inline std::size_t segment_elements(DType dtype) { return kSegmentBytes / dtype_size(dtype); }

struct Segment {
  std::size_t buffer;
  std::size_t begin;  // element index within the buffer
  std::size_t count;
};

// Folds segment results in (buffer, segment) order: the one reduction both paths share. Segment
// sums are added with Neumaier's compensation, so the error does not grow with the number of
// segments (only with the fixed number of terms inside one segment).
struct Accumulator {
  ScanResult result;
  double compensation = 0.0;

  void add(const Segment& s, const SegmentResult& r) {
    const double total = result.sumsq + r.sumsq;
    if (std::isfinite(total))  // once inf/NaN, plain IEEE addition (inf - inf would make NaN)
      compensation += std::fabs(result.sumsq) >= std::fabs(r.sumsq) ? (result.sumsq - total) + r.sumsq
                                                                    : (r.sumsq - total) + result.sumsq;
    result.sumsq = total;
    if (r.nonfinite_count == 0) return;
    result.nonfinite_count += static_cast<std::int64_t>(r.nonfinite_count);
    if (result.finite) {
      result.finite = false;
      result.first_bad_buffer = static_cast<std::int64_t>(s.buffer);
      result.first_bad_index = static_cast<std::int64_t>(s.begin + r.first_bad);
    }
  }

  ScanResult finish() const {
    ScanResult out = result;
    if (std::isfinite(out.sumsq)) out.sumsq += compensation;
    return out;
  }
};

inline const unsigned char* segment_data(const Buffer& b, const Segment& s) {
  return static_cast<const unsigned char*>(b.data) + s.begin * dtype_size(b.dtype);
}

// Work shared by the calling thread and its helpers. Threads claim runs of segments from a
// counter instead of fixed shares, and the caller waits only for segments that were claimed, never
// for a helper to start: a helper that starts late (on a VM, waking an idle vCPU can take
// milliseconds; a core may still be busy with torch's spinning OpenMP workers) finds nothing left
// and exits. Helpers are detached and own this state through a shared_ptr, so a late one never
// touches the caller's stack; it reads the scanned memory only for segments it claimed, and the
// caller returns only after those are done. Each segment has its own result slot, so the
// reduction is the same whoever computed which segment.
struct SharedWork {
  std::vector<Buffer> buffers;
  std::vector<Segment> segments;
  std::vector<SegmentResult> results;
  bool want_sumsq = true;
  std::atomic<std::size_t> next_segment{0};
  std::atomic<std::size_t> segments_done{0};
  std::mutex mutex;
  std::condition_variable all_done;

  void claim_until_empty() noexcept {
    const std::size_t total = segments.size();
    for (;;) {
      const std::size_t first = next_segment.fetch_add(kSegmentsPerClaim, std::memory_order_relaxed);
      if (first >= total) return;
      const std::size_t last = std::min(first + kSegmentsPerClaim, total);
      for (std::size_t k = first; k < last; ++k) {
        const Segment& s = segments[k];
        const Buffer& b = buffers[s.buffer];
        results[k] = scan_segment(segment_data(b, s), s.count, b.dtype, want_sumsq);
      }
      // release: publishes the results written above to the thread that sees the final count.
      if (segments_done.fetch_add(last - first, std::memory_order_acq_rel) + (last - first) == total) {
        std::lock_guard<std::mutex> lock(mutex);
        all_done.notify_all();
      }
    }
  }

  void wait_until_done() {
    std::unique_lock<std::mutex> lock(mutex);
    all_done.wait(lock, [this] { return segments_done.load(std::memory_order_acquire) == segments.size(); });
  }
};

// Helper threads that outlive a scan. Starting a thread per scan cost 20-60 us here, and a new
// thread lands on a vCPU that may be idle (halted: waking it takes as long again) or busy with
// torch's OpenMP worker, which spins for a while after every parallel op; either way it started
// late and the calling thread read most of the bytes alone (1.9-2.2x the time of torch's own
// 2-thread read of them). The helpers stay: after each scan they spin for kSpinNanoseconds
// (a guard check comes every step; back to back, the next one finds them running), then sleep on
// a condition variable. They take work through SharedWork's claim counter, so a late or missing
// helper only means the caller claims more segments itself; after fork() (the helpers do not
// exist in the child) a new pool is made, and a pool that cannot start threads simply has none.
class HelperPool {
 public:
  // Spinning is cheap next to a scan of this size class (>= 16 MiB: >= 0.5 ms at ~32 GB/s) and
  // short enough not to matter to the training step that runs next.
  static constexpr long long kSpinNanoseconds = 200000;

  static HelperPool& instance() {
    // Leaked on purpose: helpers may still be sleeping on it when static destructors run.
    static std::mutex creation;
    static HelperPool* pool = nullptr;
    std::lock_guard<std::mutex> lock(creation);
#if defined(PYLRCORE_HAVE_GETPID)
    if (pool != nullptr && pool->pid_ != getpid()) pool = nullptr;  // forked: the helpers are gone
#endif
    if (pool == nullptr) pool = new HelperPool();
    return *pool;
  }

  // Offers `work` to up to `helpers` threads (started on first use); returns at once.
  void offer(const std::shared_ptr<SharedWork>& work, std::size_t helpers) {
    std::lock_guard<std::mutex> lock(mutex_);
    while (threads_ < helpers) {
      try {
        std::thread([this] { loop(); }).detach();
      } catch (const std::exception&) {  // no more threads: those running share the work
        break;
      }
      ++threads_;
    }
    work_ = work;
    wanted_ = helpers;
    generation_.fetch_add(1, std::memory_order_release);
    wake_.notify_all();
  }

 private:
  HelperPool() {
#if defined(PYLRCORE_HAVE_GETPID)
    pid_ = getpid();
#endif
  }

  [[noreturn]] void loop() {
    std::uint64_t seen = generation_.load(std::memory_order_acquire);
    for (;;) {
      // Spin a while for the next scan, then sleep.
      const auto until = std::chrono::steady_clock::now() + std::chrono::nanoseconds(kSpinNanoseconds);
      while (generation_.load(std::memory_order_acquire) == seen && std::chrono::steady_clock::now() < until) {
        for (int i = 0; i < 64; ++i) relax();
      }
      std::shared_ptr<SharedWork> work;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return generation_.load(std::memory_order_relaxed) != seen; });
        seen = generation_.load(std::memory_order_relaxed);
        if (taken_generation_ != seen) taken_generation_ = seen, taken_ = 0;
        if (taken_ < wanted_) {
          ++taken_;
          work = work_;
        }
      }
      if (work) work->claim_until_empty();
    }
  }

  static void relax() {
#if defined(__x86_64__) || defined(_M_X64)
    _mm_pause();
#endif
  }

  std::mutex mutex_;
  std::condition_variable wake_;
  std::atomic<std::uint64_t> generation_{0};
  std::shared_ptr<SharedWork> work_;  // the latest scan's (helpers keep it alive while they read)
  std::size_t wanted_ = 0;            // helpers that scan may use
  std::uint64_t taken_generation_ = 0;
  std::size_t taken_ = 0;  // helpers that took the latest work
  std::size_t threads_ = 0;
  long pid_ = 0;
};

// The process's OpenMP runtime, when one is loaded (torch's libgomp: PyTorch's CPU ops run on it).
// In a training step the scan comes right after torch's ops, whose OpenMP workers keep spinning on
// the other cores for a while after each op; a thread of our own that wakes then has to wait for a
// core, and the calling thread reads most of the bytes alone. Run on that runtime's team instead,
// the scan gets the workers that are spinning anyway, and as many as the user gave torch
// (torch.set_num_threads sets the runtime's thread count). Found with dlopen(RTLD_NOLOAD): only a
// runtime the process has already loaded is used, and its handle is kept (never unloaded). No
// runtime, or a forked child (its team's threads stayed in the parent): the HelperPool below.
// Opt-in (environment PYLRCORE_SCAN_OPENMP=1, read once): calling into a runtime we did not start
// is unsafe in a child forked after the parent used it and before pylrcore was imported there
// (libgomp's team threads stayed in the parent: the region never starts), may pick a runtime other
// than torch's when several are loaded, and gets a per-calling-thread team; on a quiet machine it
// measured no better than the HelperPool (Guard.check / read 1.00-1.85x vs 0.99-1.67x, bench/README).
// PYLRCORE_NO_PROCESS_OPENMP compiles it out.
// The trade-off, measured on a 2-vCPU VM: with the other core free or spinning for torch, the scan
// no longer waits for a thread of its own to get a core; with the VM loaded 3-4x over, a team member
// that is descheduled holds the region's closing barrier (as it does torch's own ops), where the
// HelperPool's caller waits only for segments that were claimed (bench/README.md, bench_guard).
#if defined(PYLRCORE_HAVE_GETPID)
inline const long kLoadedInProcess = static_cast<long>(getpid());  // set when the library loads
#endif
struct ProcessOpenMP {
  using Parallel = void (*)(void (*)(void*), void*, unsigned, unsigned);  // GOMP_parallel's ABI
  using Count = int (*)();
  Parallel parallel = nullptr;
  Count max_threads = nullptr;
  Count in_parallel = nullptr;

  // Looked up until found (torch may be imported after pylrcore); only large scans ask.
  static const ProcessOpenMP* find() noexcept {
#if defined(__linux__) && defined(PYLRCORE_HAVE_GETPID) && !defined(PYLRCORE_NO_PROCESS_OPENMP) && \
    !defined(__SANITIZE_THREAD__)
    static const bool wanted = [] {
      const char* v = std::getenv("PYLRCORE_SCAN_OPENMP");
      return v != nullptr && v[0] != '\0' && !(v[0] == '0' && v[1] == '\0');
    }();
    if (!wanted) return nullptr;
    if (static_cast<long>(getpid()) != kLoadedInProcess) return nullptr;  // forked
    static std::atomic<const ProcessOpenMP*> found{nullptr};
    const ProcessOpenMP* known = found.load(std::memory_order_acquire);
    if (known != nullptr) return known;
    for (const char* name : {"libgomp.so.1", "libiomp5.so", "libomp.so"}) {
      void* lib = dlopen(name, RTLD_LAZY | RTLD_NOLOAD);
      if (lib == nullptr) continue;
      auto* omp = new ProcessOpenMP;  // kept for the process, like the runtime itself
      omp->parallel = reinterpret_cast<Parallel>(dlsym(lib, "GOMP_parallel"));
      omp->max_threads = reinterpret_cast<Count>(dlsym(lib, "omp_get_max_threads"));
      omp->in_parallel = reinterpret_cast<Count>(dlsym(lib, "omp_in_parallel"));
      if (omp->parallel == nullptr || omp->max_threads == nullptr || omp->in_parallel == nullptr) {
        delete omp;
        dlclose(lib);
        continue;
      }
      const ProcessOpenMP* expected = nullptr;
      if (!found.compare_exchange_strong(expected, omp, std::memory_order_acq_rel)) {
        delete omp;  // another thread found it first; both handles keep the runtime loaded
        return expected;
      }
      return omp;
    }
#endif
    return nullptr;
  }
};

inline void validate(const Buffer* buffers, std::size_t n) {
  if (n > 0 && buffers == nullptr) fail("scan: buffers is null but n > 0");
  for (std::size_t i = 0; i < n; ++i) {
    const Buffer& b = buffers[i];
    dtype_from_code(static_cast<int>(b.dtype), "buffers", i);
    if (b.count > 0 && b.data == nullptr) {
      std::ostringstream s;
      s << "buffers[" << i << "]: null data pointer with " << b.count << " elements";
      fail(s.str());
    }
    if (b.count > std::numeric_limits<std::size_t>::max() / 8) {
      std::ostringstream s;
      s << "buffers[" << i << "]: element count " << b.count << " is too large";
      fail(s.str());
    }
  }
}

}  // namespace scan_detail

// Scans `n` buffers. threads = 0 picks a count from the input size (one thread per 8 MiB, so one
// thread below 16 MiB) and the CPUs this process may run on, run by the HelperPool, or, opted in with
// PYLRCORE_SCAN_OPENMP=1 and a loaded OpenMP runtime, by that runtime's team, at most its thread
// count (ProcessOpenMP); threads >= 1 uses that many threads of the HelperPool (at most one per
// segment). The result does not depend on
// the thread count. Throws std::invalid_argument on malformed buffers.
inline ScanResult scan(const Buffer* buffers, std::size_t n, bool want_sumsq, unsigned threads = 0) {
  using namespace scan_detail;
  validate(buffers, n);

  std::size_t total_bytes = 0, total_segments = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const std::size_t per = segment_elements(buffers[i].dtype);
    total_bytes += buffers[i].count * dtype_size(buffers[i].dtype);
    total_segments += (buffers[i].count + per - 1) / per;
  }
  std::size_t workers = threads;
  if (workers == 0)
    workers = std::min<std::size_t>(available_cpus(), std::max<std::size_t>(1, total_bytes / kMinBytesPerThread));
  workers = std::min(workers, total_segments);

  if (workers <= 1) {  // the per-step common case for small models: no allocation, no thread
    Accumulator acc;
    for (std::size_t i = 0; i < n; ++i) {
      const Buffer& b = buffers[i];
      const std::size_t per = segment_elements(b.dtype);
      for (std::size_t begin = 0; begin < b.count; begin += per) {
        const Segment s{i, begin, std::min(per, b.count - begin)};
        acc.add(s, scan_segment(segment_data(b, s), s.count, b.dtype, want_sumsq));
      }
    }
    return acc.finish();
  }

  auto work = std::make_shared<SharedWork>();
  work->buffers.assign(buffers, buffers + n);
  work->want_sumsq = want_sumsq;
  work->segments.reserve(total_segments);
  for (std::size_t i = 0; i < n; ++i) {
    const std::size_t per = segment_elements(buffers[i].dtype);
    for (std::size_t begin = 0; begin < buffers[i].count; begin += per)
      work->segments.push_back(Segment{i, begin, std::min(per, buffers[i].count - begin)});
  }
  work->results.resize(work->segments.size());
  const ProcessOpenMP* omp = threads == 0 ? ProcessOpenMP::find() : nullptr;
  if (omp != nullptr && omp->in_parallel() == 0) {
    // The runtime's thread count is the user's setting (torch.set_num_threads); it returns when its
    // whole team is done, so every claimed segment is finished here.
    const std::size_t team = std::min<std::size_t>(workers, static_cast<std::size_t>(std::max(1, omp->max_threads())));
    if (team > 1)
      omp->parallel([](void* w) { static_cast<SharedWork*>(w)->claim_until_empty(); }, work.get(),
                    static_cast<unsigned>(team), 0);
    else
      work->claim_until_empty();
  } else {
    HelperPool::instance().offer(work, workers - 1);
    work->claim_until_empty();
    work->wait_until_done();
  }

  Accumulator acc;
  for (std::size_t k = 0; k < work->segments.size(); ++k) acc.add(work->segments[k], work->results[k]);
  return acc.finish();
}

inline ScanResult scan(const std::vector<Buffer>& buffers, bool want_sumsq, unsigned threads = 0) {
  return scan(buffers.data(), buffers.size(), want_sumsq, threads);
}

}  // namespace pylrcore
