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
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <new>
#include <sstream>
#include <system_error>
#include <thread>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <sys/mman.h>
#define PYLRCORE_HAVE_MMAP 1
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

// Copies bytes [begin, end) of the concatenation of all spans, in table order.
inline void copy_range(const CopySpan* spans, std::size_t count, std::size_t begin, std::size_t end) {
  std::size_t at = 0;  // where span i starts in the concatenation
  for (std::size_t i = 0; i < count && at < end; at += spans[i].nbytes, ++i) {
    const std::size_t lo = std::max(at, begin), hi = std::min(at + spans[i].nbytes, end);
    if (lo < hi)
      std::memcpy(static_cast<char*>(spans[i].dst) + (lo - at), static_cast<const char*>(spans[i].src) + (lo - at),
                  hi - lo);
  }
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
inline void copy_spans(const CopySpan* spans, std::size_t count, unsigned max_threads) {
  using namespace copy_detail;
  const std::size_t total = total_bytes(spans, count);
  const std::size_t by_size = std::max<std::size_t>(1, total / kMinBytesPerThread);
  const std::size_t workers = std::min<std::size_t>(std::max(1u, max_threads), by_size);
  if (workers == 1) {
    copy_range(spans, count, 0, total);
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
      helpers.emplace_back(copy_range, spans, count, begin, end);
    } catch (const std::system_error&) {
      left_over = begin;
      break;
    }
  }
  copy_range(spans, count, 0, std::min(share, total));
  copy_range(spans, count, left_over, total);
  for (auto& t : helpers) t.join();
}

inline void copy_spans(const std::vector<CopySpan>& spans, unsigned max_threads) {
  copy_spans(spans.data(), spans.size(), max_threads);
}

// One block of fresh, zero-filled, writable memory, released by the destructor. With mmap it is
// its own mapping (never glibc's heap, whose reuse makes timings depend on what ran before), and
// from kHugeFrom bytes on 2 MiB-aligned with MADV_HUGEPAGE (effective where transparent huge pages
// are "always" or "madvise"). Elsewhere it is an aligned operator new, zero-filled.
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
    mapped_ = huge ? nbytes + kHuge : nbytes;  // room to start on a 2 MiB boundary
    void* base = mmap(nullptr, mapped_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) throw std::bad_alloc();
    base_ = base;
    const auto address = reinterpret_cast<std::uintptr_t>(base);
    data_ = reinterpret_cast<char*>(huge ? (address + kHuge - 1) / kHuge * kHuge : address);
#if defined(MADV_HUGEPAGE)
    if (huge) (void)madvise(base, mapped_, MADV_HUGEPAGE);  // a hint; without THP it changes nothing
#endif
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
      other.base_ = nullptr, other.mapped_ = 0, other.data_ = nullptr, other.size_ = 0;
    }
    return *this;
  }

  char* data() const { return data_; }
  std::size_t size() const { return size_; }

 private:
  void release() noexcept {
    if (base_ == nullptr) return;
#if defined(PYLRCORE_HAVE_MMAP)
    munmap(base_, mapped_);
#else
    ::operator delete(base_, std::align_val_t(kAlign));
#endif
    base_ = nullptr;
  }

  void* base_ = nullptr;
  std::size_t mapped_ = 0;
  char* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace pylrcore
