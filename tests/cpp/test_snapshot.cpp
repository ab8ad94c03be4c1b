#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "check.hpp"
#include "pylrcore/step/snapshot.hpp"

using namespace pylrcore;

namespace {

// Bytes that differ from span to span and from offset to offset, so a misplaced byte shows.
std::vector<unsigned char> pattern(std::size_t n, unsigned seed) {
  std::vector<unsigned char> v(n);
  std::uint32_t x = seed * 2654435761u + 1;
  for (auto& b : v) {
    x = x * 1664525u + 1013904223u;
    b = static_cast<unsigned char>(x >> 24);
  }
  return v;
}

// Copies spans of the given sizes from patterned sources into one zeroed block laid out back to back
// with a guard byte between spans, then checks every byte and every guard.
bool copies_exactly(const std::vector<std::size_t>& sizes, unsigned threads, bool touched = false) {
  std::vector<std::vector<unsigned char>> sources;
  std::size_t total = 0;
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    sources.push_back(pattern(sizes[i], static_cast<unsigned>(i) + 1));
    total += sizes[i] + 1;
  }
  std::vector<unsigned char> out(total, 0xAB);
  std::vector<CopySpan> spans;
  std::size_t at = 0;
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    spans.push_back({out.data() + at, sources[i].data(), sizes[i]});
    at += sizes[i] + 1;
  }
  copy_spans(spans, threads, touched);
  at = 0;
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    if (sizes[i] && std::memcmp(out.data() + at, sources[i].data(), sizes[i]) != 0) return false;
    at += sizes[i];
    if (out[at++] != 0xAB) return false;  // nothing written past a span
  }
  return true;
}

}  // namespace

TEST(copy_small_tables_on_one_thread) {
  CHECK(copies_exactly({}, 1));
  CHECK(copies_exactly({0, 1, 7, 64, 4096, 0, 12345}, 1));
  CHECK(copies_exactly({0, 1, 7, 64, 4096, 0, 12345}, 8));  // too small to start threads
}

TEST(copy_splits_large_spans_across_threads_at_any_byte) {
  // 3 + 9 + 5 MB plus odd sizes: with 2-4 threads, shares end inside spans and between them.
  const std::vector<std::size_t> sizes = {3u << 20, 1, (9u << 20) + 13, 3, (5u << 20) - 7, 100};
  for (unsigned threads : {1u, 2u, 3u, 4u, 64u}) CHECK(copies_exactly(sizes, threads));
  CHECK(copies_exactly({std::size_t(17) << 20}, 4));  // one span shared by every thread
}

TEST(streamed_copies_are_exact_at_every_alignment) {
  // touched + 16 MiB or more streams; the spans start 1 byte apart (guard bytes), so most
  // destinations are not 16-byte aligned and the head/tail paths run, also across thread shares.
  const std::vector<std::size_t> sizes = {(9u << 20) + 13, 5, 4095, 4096 + 17, (8u << 20) - 3, 70};
  for (unsigned threads : {1u, 2u, 3u}) CHECK(copies_exactly(sizes, threads, true));
  CHECK(copies_exactly({0, 1, 7, 64, 4096, 12345}, 1, true));  // small: plain memcpy
}

TEST(copy_rejects_null_addresses_but_not_empty_spans) {
  unsigned char byte = 1;
  std::vector<CopySpan> empty_null = {{nullptr, nullptr, 0}};
  copy_spans(empty_null, 2);
  std::vector<CopySpan> null_dst = {{&byte, &byte, 0}, {nullptr, &byte, 1}};
  CHECK_THROWS(copy_spans(null_dst, 1), std::invalid_argument);
  std::vector<CopySpan> null_src = {{&byte, nullptr, 1}};
  CHECK_THROWS(copy_spans(null_src, 1), std::invalid_argument);
  CHECK_THROWS(copy_spans(nullptr, 3, 1), std::invalid_argument);
}

TEST(fresh_arenas_are_zeroed_writable_and_huge_ones_start_on_2mib) {
  Arena::release_spare();  // nothing to reuse: every Arena below is fresh
  Arena none(0);
  CHECK(none.data() == nullptr && none.size() == 0 && !none.reused());
  for (std::size_t n : {std::size_t(1), std::size_t(4097), (std::size_t(5) << 20) + 3}) {
    Arena a(n);
    CHECK(a.size() == n && a.data() != nullptr && !a.reused());
    CHECK(reinterpret_cast<std::uintptr_t>(a.data()) % Arena::kAlign == 0);
    bool zero = true;
    for (std::size_t i = 0; i < n; ++i) zero = zero && a.data()[i] == 0;
    CHECK(zero);
    std::memset(a.data(), 0x5A, n);
    CHECK(a.data()[n - 1] == 0x5A);
  }
#if defined(PYLRCORE_HAVE_MMAP)
  Arena huge(Arena::kHugeFrom);
  CHECK(reinterpret_cast<std::uintptr_t>(huge.data()) % Arena::kHuge == 0);
#endif
  Arena::release_spare();
}

#if defined(PYLRCORE_HAVE_MMAP)
TEST(a_released_large_arena_is_reused_by_one_of_about_its_size) {
  Arena::release_spare();
  const std::size_t n = std::size_t(8) << 20;
  { Arena first(n); std::memset(first.data(), 1, n); }
  const std::size_t kept = Arena::spare_bytes();
  CHECK(kept >= n);
  {
    Arena small(Arena::kHugeFrom - 1);  // small ones never take it
    CHECK(!small.reused() && Arena::spare_bytes() == kept);
    Arena tiny_huge(Arena::kHugeFrom);  // needs less than half of it: left for a larger one
    CHECK(!tiny_huge.reused());
  }
  CHECK(Arena::spare_bytes() == kept);  // the larger mapping stays the spare
  {
    Arena second(n - 100);
    CHECK(second.reused() && second.size() == n - 100 && Arena::spare_bytes() == 0);
    CHECK(reinterpret_cast<std::uintptr_t>(second.data()) % Arena::kHuge == 0);
    std::memset(second.data(), 2, second.size());  // every byte writable (ASan: still mapped)
    Arena too_big(n + Arena::kHuge + 1);  // does not fit in what `second` frees below
  }
  CHECK(Arena::spare_bytes() > kept);  // too_big's mapping was the larger one
  Arena::release_spare();
  CHECK(Arena::spare_bytes() == 0);
}
#endif

TEST(arena_moves_own_their_memory_once) {
  Arena a(1000);
  char* data = a.data();
  Arena b(std::move(a));
  CHECK(b.data() == data && b.size() == 1000);
  CHECK(a.data() == nullptr && a.size() == 0);  // NOLINT(bugprone-use-after-move): the moved-from state is the point
  Arena c(10);
  c = std::move(b);
  CHECK(c.data() == data && c.size() == 1000);
  data[999] = 1;  // still mapped: ASan would report a use after free
}

TEST(copy_into_arena_round_trips) {
  const auto src = pattern((std::size_t(6) << 20) + 5, 9);
  Arena a(src.size());
  std::vector<CopySpan> in = {{a.data(), src.data(), src.size()}};
  copy_spans(in, 2);
  std::vector<unsigned char> back(src.size());
  std::vector<CopySpan> out = {{back.data(), a.data(), src.size()}};
  copy_spans(out, 2);
  CHECK(back == src);
}
