// Bulk byte copies for the LR finder's snapshot: a table of (destination, source, byte count) copied
// by a few threads, and an Arena, the one fresh allocation a snapshot copies into.
//
// Why not one clone per tensor: on the project's VM the cost of a snapshot of 68 MB is almost all
// first-touch page faults of fresh memory (about 1.6 us per 4 KiB page: ~30 ms), then the kernel
// unmapping those pages again when the copy is freed (~7 ms). An Arena maps the whole snapshot at
// once, 2 MiB-aligned with transparent huge pages requested, so 68 MB is ~34 faults whose zeroing
// runs at memory speed; copy_spans then touches each page from the thread that fills it.
// Measured there (C++, medians of 15): fresh 4 KiB pages + memcpy 36 ms, huge pages + memcpy 7 ms,
// memcpy into memory already touched 4-6 ms (1 thread) and 3.7-5 ms (2 threads).
//
// Two more things halve what is left (same VM, 68 MB): (1) a copy into memory that is already
// mapped, far larger than the cache, is bound by memory traffic, and memcpy's ordinary stores first
// read every destination line (read source + read destination + write = 3 passes): streaming
// (non-temporal) stores skip that read, 6.5 -> 4.3 ms. Into fresh pages they lose (7.9 vs 10.6 ms:
// the kernel has just zeroed the page through the cache), so the caller says which it is.
// (2) A released Arena is kept as one spare mapping, marked MADV_FREE (the kernel takes its pages
// back under memory pressure, without a syscall from us), and the next Arena of about its size reuses
// it: refilling it costs 3.8 ms instead of faulting 34 fresh huge pages.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <mutex>
#include <new>
#include <sstream>
#include <system_error>
#include <thread>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <sys/mman.h>
#define PYLRCORE_HAVE_MMAP 1
#endif

#if defined(__SSE2__) || defined(_M_X64)
#include <emmintrin.h>
#define PYLRCORE_HAVE_STREAM 1
#endif

#include "pylrcore/common.hpp"

namespace pylrcore {

struct CopySpan {
  void* dst;
  const void* src;
  std::size_t nbytes;
};

namespace copy_detail {

// Starting a thread costs 20-60 us here; below this many bytes per thread it does not pay.
constexpr std::size_t kMinBytesPerThread = std::size_t(4) << 20;
// Work is split at multiples of this, so no two threads write into the same (huge) page.
constexpr std::size_t kSplitAlign = std::size_t(2) << 20;

// Streaming pays only where the copy cannot stay in the cache anyway: from this many bytes per call
// (half of a common server L3; the VM's is 32 MiB). Pieces smaller than kStreamPiece are memcpy'd.
constexpr std::size_t kStreamFrom = std::size_t(16) << 20;
constexpr std::size_t kStreamPiece = std::size_t(4) << 10;

// memcpy with non-temporal stores: the destination's lines are written without being read first.
inline void stream_copy(char* dst, const char* src, std::size_t n) {
#if defined(PYLRCORE_HAVE_STREAM)
  // Streaming stores need a 16-byte aligned destination; the source is read unaligned.
  const std::size_t head = std::min(n, (16 - reinterpret_cast<std::uintptr_t>(dst) % 16) % 16);
  std::memcpy(dst, src, head);
  std::size_t i = head;
  for (; i + 64 <= n; i += 64) {
    const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i + 16));
    const __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i + 32));
    const __m128i d = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i + 48));
    _mm_stream_si128(reinterpret_cast<__m128i*>(dst + i), a);
    _mm_stream_si128(reinterpret_cast<__m128i*>(dst + i + 16), b);
    _mm_stream_si128(reinterpret_cast<__m128i*>(dst + i + 32), c);
    _mm_stream_si128(reinterpret_cast<__m128i*>(dst + i + 48), d);
  }
  std::memcpy(dst + i, src + i, n - i);
#else
  std::memcpy(dst, src, n);
#endif
}

// Copies bytes [begin, end) of the concatenation of all spans, in table order.
inline void copy_range(const CopySpan* spans, std::size_t count, std::size_t begin, std::size_t end, bool stream) {
  std::size_t at = 0;  // where span i starts in the concatenation
  for (std::size_t i = 0; i < count && at < end; at += spans[i].nbytes, ++i) {
    const std::size_t lo = std::max(at, begin), hi = std::min(at + spans[i].nbytes, end);
    if (lo >= hi) continue;
    char* dst = static_cast<char*>(spans[i].dst) + (lo - at);
    const char* src = static_cast<const char*>(spans[i].src) + (lo - at);
    if (stream && hi - lo >= kStreamPiece)
      stream_copy(dst, src, hi - lo);
    else
      std::memcpy(dst, src, hi - lo);
  }
#if defined(PYLRCORE_HAVE_STREAM)
  // Streaming stores are weakly ordered: make them visible before this thread reports it is done.
  if (stream) _mm_sfence();
#endif
}

inline std::size_t total_bytes(const CopySpan* spans, std::size_t count) {
  if (count > 0 && spans == nullptr) fail("copy_spans: spans is null but count > 0");
  std::size_t total = 0;
  for (std::size_t i = 0; i < count; ++i) {
    const CopySpan& s = spans[i];
    if (s.nbytes > 0 && (s.dst == nullptr || s.src == nullptr)) {
      std::ostringstream m;
      m << "copy_spans: spans[" << i << "] has a null address with " << s.nbytes << " bytes";
      fail(m.str());
    }
    if (s.nbytes > std::numeric_limits<std::size_t>::max() - total) fail("copy_spans: total size overflows");
    total += s.nbytes;
  }
  return total;
}

}  // namespace copy_detail

// Copies every span (memcpy semantics: spans must not overlap their own or each other's
// destinations). Up to `max_threads` threads share the bytes in contiguous runs, at least
// kMinBytesPerThread each, so small tables stay on the calling thread. If a thread cannot be
// started, the calling thread copies its share. Throws std::invalid_argument on a null address.
// `touched`: the destinations are memory in use (live tensors, a reused Arena), not fresh pages;
// large copies then use streaming stores (see the top of the file).
inline void copy_spans(const CopySpan* spans, std::size_t count, unsigned max_threads, bool touched = false) {
  using namespace copy_detail;
  const std::size_t total = total_bytes(spans, count);
  const bool stream = touched && total >= kStreamFrom;
  const std::size_t by_size = std::max<std::size_t>(1, total / kMinBytesPerThread);
  const std::size_t workers = std::min<std::size_t>(std::max(1u, max_threads), by_size);
  if (workers == 1) {
    copy_range(spans, count, 0, total, stream);
    return;
  }
  // Shares are rounded up to kSplitAlign; the last one ends at `total`, trailing ones may be empty.
  const std::size_t share = (total / workers + kSplitAlign - 1) / kSplitAlign * kSplitAlign;
  std::vector<std::thread> helpers;
  helpers.reserve(workers - 1);
  std::size_t left_over = total;  // from here on the calling thread copies (a thread failed to start)
  for (std::size_t k = 1; k < workers; ++k) {
    const std::size_t begin = std::min(total, k * share);
    const std::size_t end = k + 1 == workers ? total : std::min(total, begin + share);
    if (begin >= end) break;
    try {
      helpers.emplace_back(copy_range, spans, count, begin, end, stream);
    } catch (const std::system_error&) {
      left_over = begin;
      break;
    }
  }
  copy_range(spans, count, 0, std::min(share, total), stream);
  copy_range(spans, count, left_over, total, stream);
  for (auto& t : helpers) t.join();
}

inline void copy_spans(const std::vector<CopySpan>& spans, unsigned max_threads, bool touched = false) {
  copy_spans(spans.data(), spans.size(), max_threads, touched);
}

// One block of writable memory, released by the destructor. With mmap it is its own mapping (never
// glibc's heap, whose reuse makes timings depend on what ran before), and from kHugeFrom bytes on
// 2 MiB-aligned with MADV_HUGEPAGE (effective where transparent huge pages are "always" or
// "madvise"). Such a large mapping is not unmapped when released but kept as the one spare (the
// larger one wins), marked MADV_FREE, and the next large Arena that fits in it (and needs at least
// half of it) takes it over: reused() says so. Its contents are then unspecified (old bytes or
// zeros, page by page); a fresh one is zero-filled. Elsewhere it is an aligned operator new.
class Arena {
 public:
  static constexpr std::size_t kAlign = 64;
  static constexpr std::size_t kHuge = std::size_t(2) << 20;
  static constexpr std::size_t kHugeFrom = kHuge;

  explicit Arena(std::size_t nbytes) : size_(nbytes) {
    if (nbytes == 0) return;
#if defined(PYLRCORE_HAVE_MMAP)
    const bool huge = nbytes >= kHugeFrom;
    if (huge && nbytes > std::numeric_limits<std::size_t>::max() - kHuge) throw std::bad_alloc();
    const std::size_t want = huge ? nbytes + kHuge : nbytes;  // room to start on a 2 MiB boundary
    if (huge) {
      Mapping m = take_spare(want);
      base_ = m.base, mapped_ = m.size, reused_ = base_ != nullptr;
    }
    if (base_ == nullptr) {
      void* base = mmap(nullptr, want, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (base == MAP_FAILED) throw std::bad_alloc();
      base_ = base, mapped_ = want;
#if defined(MADV_HUGEPAGE)
      if (huge) (void)madvise(base, mapped_, MADV_HUGEPAGE);  // a hint; without THP it changes nothing
#endif
    }
    const auto address = reinterpret_cast<std::uintptr_t>(base_);
    data_ = reinterpret_cast<char*>(huge ? (address + kHuge - 1) / kHuge * kHuge : address);
#else
    data_ = static_cast<char*>(::operator new(nbytes, std::align_val_t(kAlign)));
    base_ = data_;
    std::memset(data_, 0, nbytes);
#endif
  }
  ~Arena() { release(); }
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;
  Arena(Arena&& other) noexcept { *this = std::move(other); }
  Arena& operator=(Arena&& other) noexcept {
    if (this != &other) {
      release();
      base_ = other.base_, mapped_ = other.mapped_, data_ = other.data_, size_ = other.size_;
      reused_ = other.reused_;
      other.base_ = nullptr, other.mapped_ = 0, other.data_ = nullptr, other.size_ = 0, other.reused_ = false;
    }
    return *this;
  }

  char* data() const { return data_; }
  std::size_t size() const { return size_; }
  // Whether this Arena took over a released one's pages (already mapped: copies into it may stream).
  bool reused() const { return reused_; }

  // Unmaps the spare now (a process that is done with snapshots and wants its memory back at once).
  static void release_spare() noexcept {
#if defined(PYLRCORE_HAVE_MMAP)
    Mapping m;
    {
      std::lock_guard<std::mutex> lock(spare_mutex());
      std::swap(m, spare());
    }
    if (m.base != nullptr) munmap(m.base, m.size);
#endif
  }
  // The spare's mapped bytes (0: none).
  static std::size_t spare_bytes() noexcept {
#if defined(PYLRCORE_HAVE_MMAP)
    std::lock_guard<std::mutex> lock(spare_mutex());
    return spare().size;
#else
    return 0;
#endif
  }

 private:
  struct Mapping {
    void* base = nullptr;
    std::size_t size = 0;
  };
  // Leaked on purpose: a static destructor could run after another static Arena's release.
  static std::mutex& spare_mutex() noexcept {
    static std::mutex* m = new std::mutex;
    return *m;
  }
  static Mapping& spare() noexcept {
    static Mapping* m = new Mapping;
    return *m;
  }

#if defined(PYLRCORE_HAVE_MMAP)
  // The spare if it holds `bytes` and no more than twice that (so one huge spare does not end up
  // under a small snapshot while the next large one maps fresh memory).
  static Mapping take_spare(std::size_t bytes) noexcept {
    std::lock_guard<std::mutex> lock(spare_mutex());
    Mapping& s = spare();
    if (s.base == nullptr || s.size < bytes || s.size / 2 > bytes) return {};
    Mapping m = s;
    s = Mapping{};
    return m;
  }
#endif

  void release() noexcept {
    if (base_ == nullptr) return;
#if defined(PYLRCORE_HAVE_MMAP)
    Mapping mine{base_, mapped_};
    bool keep = size_ >= kHugeFrom;
#if defined(MADV_FREE)
    // The pages stay mapped until the kernel needs them; without MADV_FREE the mapping is not kept.
    keep = keep && madvise(base_, mapped_, MADV_FREE) == 0;
#else
    keep = false;
#endif
    if (keep) {
      std::lock_guard<std::mutex> lock(spare_mutex());
      if (spare().size < mine.size) std::swap(spare(), mine);  // the larger one is kept
    }
    if (mine.base != nullptr) munmap(mine.base, mine.size);
#else
    ::operator delete(base_, std::align_val_t(kAlign));
#endif
    base_ = nullptr;
  }

  void* base_ = nullptr;
  std::size_t mapped_ = 0;
  char* data_ = nullptr;
  std::size_t size_ = 0;
  bool reused_ = false;
};

}  // namespace pylrcore
