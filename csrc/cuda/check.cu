// The multi-tensor check kernel: one launch reads every gradient of a CheckTable once and writes
// found_inf, the sum of squares and where the first NaN/Inf is. The per-thread and per-block
// arithmetic is step/chunk_check.hpp's, which the host twin runs too; this file adds only what is
// specific to the device: the grid-stride over chunks, the block fold in shared memory and
// shuffles, and the last-block pattern that combines the blocks in the same launch.
#include <algorithm>
#include <cstring>

#include "launch.hpp"
#include "pylrcore/step/chunk_check.hpp"
#include "runtime.hpp"

namespace pylrcore::cuda {
namespace {

using namespace chunk_check;

// Counters that outlive a block; the last block reads them and resets them for the next launch,
// so a check needs no memset (one launch per step, and capturable in a CUDA graph).
struct Scratch {
  unsigned long long nonfinite;
  unsigned long long first_key;  // bad_key() of the first NaN/Inf, kNoBad when none
  unsigned int blocks_done;
  unsigned int unused;
};

// The table in device memory: one allocation, 8-byte arrays first.
struct DeviceView {
  Scratch* scratch;
  std::uint64_t* address;             // [tensors] (rewritten by repoint)
  const std::uint64_t* count;         // [tensors]
  const std::uint32_t* dtype;         // [tensors], DType codes
  const std::uint32_t* chunk_tensor;  // [chunks]
  const std::uint64_t* chunk_begin;   // [chunks]
  double* chunk_sumsq;                // [chunks], written by each launch
  std::size_t chunks;
};

// fold_tree() over the block's kThreads values, the same pairs in the same order: shared memory
// down to one warp, then shuffles (at width w, lane l < w adds lane l + w, as fold_tree does; the
// lanes >= w compute values nobody reads). The result is valid in thread 0.
__device__ double block_sum(double value, double* shared) {
  const unsigned t = threadIdx.x;
  shared[t] = value;
  __syncthreads();
  for (unsigned width = kThreads / 2; width >= 32; width /= 2) {
    if (t < width) shared[t] = __dadd_rn(shared[t], shared[t + width]);
    __syncthreads();
  }
  double v = 0.0;
  if (t < 32) {
    v = shared[t];
    for (unsigned width = 16; width > 0; width /= 2) v = __dadd_rn(v, __shfl_down_sync(0xffffffffu, v, width));
  }
  __syncthreads();  // `shared` is reused by the next call
  return v;
}

__global__ void __launch_bounds__(kThreads) check_kernel(DeviceView table, CheckOutputs out) {
  __shared__ double shared[kThreads];
  __shared__ bool is_last;
  Scratch* scratch = table.scratch;

  for (std::size_t c = blockIdx.x; c < table.chunks; c += gridDim.x) {
    const std::uint32_t tensor = table.chunk_tensor[c];
    const std::uint64_t begin = table.chunk_begin[c];
    const auto dtype = static_cast<DType>(table.dtype[tensor]);
    const std::uint64_t left = table.count[tensor] - begin;
    const std::size_t count = static_cast<std::size_t>(left < chunk_elements(dtype) ? left : chunk_elements(dtype));
    const auto* p = reinterpret_cast<const unsigned char*>(table.address[tensor]) + begin * dtype_size(dtype);
    const auto misalign = static_cast<unsigned>(reinterpret_cast<std::uintptr_t>(p) % kVectorBytes);
    const Partial part = thread_partial(dtype, p, count, misalign, threadIdx.x, kThreads);
    if (part.nonfinite > 0) {  // rare: atomics only where a bad value was seen
      atomicAdd(&scratch->nonfinite, static_cast<unsigned long long>(part.nonfinite));
      atomicMin(&scratch->first_key, static_cast<unsigned long long>(bad_key(tensor, begin + part.first_bad)));
    }
    const double sum = block_sum(part.sumsq, shared);
    if (threadIdx.x == 0) table.chunk_sumsq[c] = sum;
  }

  // Last-block pattern: publish this block's chunk sums and atomics, count the block in; the block
  // that counts last sees every other block's writes and folds the chunk sums in a fixed order.
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) is_last = atomicAdd(&scratch->blocks_done, 1u) == gridDim.x - 1;
  __syncthreads();
  if (!is_last) return;
  __threadfence();

  double acc = 0.0;
  for (std::size_t c = threadIdx.x; c < table.chunks; c += kThreads) acc = __dadd_rn(acc, __ldcg(&table.chunk_sumsq[c]));
  const double total = block_sum(acc, shared);
  if (threadIdx.x != 0) return;
  const unsigned long long bad = __ldcg(&scratch->nonfinite);
  const unsigned long long key = __ldcg(&scratch->first_key);
  if (out.found_inf) *reinterpret_cast<float*>(out.found_inf) = bad > 0 ? 1.0f : 0.0f;
  if (out.sumsq) *reinterpret_cast<double*>(out.sumsq) = total;
  if (out.info) {
    auto* info = reinterpret_cast<long long*>(out.info);
    info[0] = static_cast<long long>(bad);
    info[1] = bad > 0 ? static_cast<long long>(key_tensor(key)) : -1;
    info[2] = bad > 0 ? static_cast<long long>(key_element(key)) : -1;
  }
  scratch->nonfinite = 0;
  scratch->first_key = kNoBad;
  scratch->blocks_done = 0;
}

std::size_t round_up(std::size_t n, std::size_t to) { return (n + to - 1) / to * to; }

}  // namespace

struct CheckTable::Impl {
  // Re-point uploads rotate through this many pinned staging slots, so the host can run this
  // many steps ahead of the device before a re-point waits for an old copy to finish.
  static constexpr int kSlots = 4;

  int device = 0;
  std::vector<TensorRef> tensors;
  std::size_t chunks = 0, bytes = 0;
  int grid = 1;
  void* memory = nullptr;
  DeviceView view{};
  std::uint64_t* pinned = nullptr;  // kSlots x tensors addresses
  cudaEvent_t slot_done[kSlots] = {};
  int next_slot = 0;

  void release() noexcept {
    // cudaFree first: it waits for the device, so no copy still reads the pinned staging slots.
    if (memory) cudaFree(memory), memory = nullptr;
    for (cudaEvent_t& e : slot_done)
      if (e) cudaEventDestroy(e), e = nullptr;
    if (pinned) cudaFreeHost(pinned), pinned = nullptr;
  }
};

CheckTable::CheckTable(int device, const std::vector<TensorRef>& tensors, StreamHandle stream)
    : impl_(std::make_unique<Impl>()) {
  validate_table(tensors.data(), tensors.size());
  Impl& t = *impl_;
  t.device = device;
  t.tensors = tensors;
  const std::vector<ChunkRef> plan = plan_chunks(tensors.data(), tensors.size());
  const std::size_t n = tensors.size(), c = plan.size();
  t.chunks = c;

  // Host image of the device block, uploaded in one copy.
  const std::size_t at_address = round_up(sizeof(Scratch), 16), at_count = at_address + 8 * n,
                    at_begin = at_count + 8 * n, at_sumsq = at_begin + 8 * c, at_chunk_tensor = at_sumsq + 8 * c,
                    at_dtype = at_chunk_tensor + 4 * c;
  t.bytes = round_up(at_dtype + 4 * n, 16);
  std::vector<unsigned char> image(t.bytes, 0);
  const Scratch fresh{0, kNoBad, 0, 0};
  std::memcpy(image.data(), &fresh, sizeof fresh);
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint32_t code = static_cast<std::uint32_t>(tensors[i].dtype);
    std::memcpy(image.data() + at_address + 8 * i, &tensors[i].address, 8);
    std::memcpy(image.data() + at_count + 8 * i, &tensors[i].count, 8);
    std::memcpy(image.data() + at_dtype + 4 * i, &code, 4);
  }
  for (std::size_t k = 0; k < c; ++k) {
    std::memcpy(image.data() + at_begin + 8 * k, &plan[k].begin, 8);
    std::memcpy(image.data() + at_chunk_tensor + 4 * k, &plan[k].tensor, 4);
  }

  DeviceScope scope(device);
  try {
    throw_if_failed(cudaMalloc(&t.memory, t.bytes), "cudaMalloc (check table)");
    throw_if_failed(cudaMemcpyAsync(t.memory, image.data(), t.bytes, cudaMemcpyHostToDevice, as_stream(stream)),
                    "cudaMemcpyAsync (check table)");
    throw_if_failed(cudaStreamSynchronize(as_stream(stream)), "cudaStreamSynchronize (check table)");
    if (n > 0) throw_if_failed(cudaMallocHost(&t.pinned, Impl::kSlots * n * 8), "cudaMallocHost (check table)");
    for (cudaEvent_t& e : t.slot_done) throw_if_failed(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "cudaEventCreate");

    int sms = 0, per_sm = 0;
    throw_if_failed(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), "cudaDeviceGetAttribute");
    throw_if_failed(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, check_kernel, kThreads, 0),
                    "cudaOccupancyMaxActiveBlocksPerMultiprocessor");
    const std::size_t resident = static_cast<std::size_t>(std::max(1, sms) * std::max(1, per_sm));
    t.grid = static_cast<int>(std::max<std::size_t>(1, std::min(c, resident)));
  } catch (...) {
    t.release();
    throw;
  }
  auto* base = static_cast<unsigned char*>(t.memory);
  t.view.scratch = reinterpret_cast<Scratch*>(base);
  t.view.address = reinterpret_cast<std::uint64_t*>(base + at_address);
  t.view.count = reinterpret_cast<const std::uint64_t*>(base + at_count);
  t.view.chunk_begin = reinterpret_cast<const std::uint64_t*>(base + at_begin);
  t.view.chunk_sumsq = reinterpret_cast<double*>(base + at_sumsq);
  t.view.chunk_tensor = reinterpret_cast<const std::uint32_t*>(base + at_chunk_tensor);
  t.view.dtype = reinterpret_cast<const std::uint32_t*>(base + at_dtype);
  t.view.chunks = c;
}

CheckTable::~CheckTable() {
  if (!impl_) return;
  try {
    DeviceScope scope(impl_->device);
    impl_->release();  // cudaFree waits for work still using the memory
  } catch (...) {
    impl_->release();
  }
}

void CheckTable::repoint(const std::vector<std::uint64_t>& addresses, StreamHandle stream) {
  Impl& t = *impl_;
  if (addresses.size() != t.tensors.size())
    fail("repoint: got " + std::to_string(addresses.size()) + " addresses for a table of " +
         std::to_string(t.tensors.size()) + " tensors");
  std::vector<TensorRef> moved = t.tensors;
  for (std::size_t i = 0; i < moved.size(); ++i) moved[i].address = addresses[i];
  validate_table(moved.data(), moved.size());
  if (moved.empty()) return;
  DeviceScope scope(t.device);
  const int slot = t.next_slot;
  throw_if_failed(cudaEventSynchronize(t.slot_done[slot]), "cudaEventSynchronize (repoint)");  // done long ago, as a rule
  std::uint64_t* staging = t.pinned + static_cast<std::size_t>(slot) * moved.size();
  std::memcpy(staging, addresses.data(), 8 * addresses.size());
  throw_if_failed(cudaMemcpyAsync(t.view.address, staging, 8 * addresses.size(), cudaMemcpyHostToDevice,
                                  as_stream(stream)),
                  "cudaMemcpyAsync (repoint)");
  throw_if_failed(cudaEventRecord(t.slot_done[slot], as_stream(stream)), "cudaEventRecord (repoint)");
  t.next_slot = (slot + 1) % Impl::kSlots;
  t.tensors = std::move(moved);
}

void CheckTable::check(const CheckOutputs& out, StreamHandle stream) const {
  const Impl& t = *impl_;
  DeviceScope scope(t.device);
  check_kernel<<<t.grid, kThreads, 0, as_stream(stream)>>>(t.view, out);
  throw_if_launch_failed("check_kernel");
}

int CheckTable::device() const { return impl_->device; }
std::size_t CheckTable::tensors() const { return impl_->tensors.size(); }
std::size_t CheckTable::chunks() const { return impl_->chunks; }
int CheckTable::grid() const { return impl_->grid; }
std::size_t CheckTable::bytes() const { return impl_->bytes; }

}  // namespace pylrcore::cuda
