// Thin C ABI over libtorch's device-generic caching-allocator API (<ATen/DeviceAccelerator.h>).
// tch has no binding for these. Every function catches every C++ exception and returns an
// error code instead, so nothing ever unwinds into Rust.
//   0 = ok, 1 = no accelerator in this process, 2 = libtorch raised (message in err)
#include <ATen/DeviceAccelerator.h>

#include <cstdint>
#include <cstring>
#include <exception>

namespace {

constexpr int kOk = 0;
constexpr int kNoAccelerator = 1;
constexpr int kError = 2;

void write_err(char* err, size_t len, const char* msg) {
  if (err == nullptr || len == 0) return;
  std::strncpy(err, msg, len - 1);
  err[len - 1] = '\0';
}

bool has_accelerator() {
  auto acc = at::accelerator::getAccelerator(false);
  return acc.has_value() && at::accelerator::deviceCount() > 0;
}

template <typename F>
int guarded(char* err, size_t len, F&& f) {
  try {
    if (!has_accelerator()) return kNoAccelerator;
    f();
    return kOk;
  } catch (const std::exception& e) {
    write_err(err, len, e.what());
    return kError;
  } catch (...) {
    write_err(err, len, "unknown C++ exception");
    return kError;
  }
}

}  // namespace

extern "C" {

// Releases the caching allocator's unused blocks back to the driver.
int hmr2_empty_cache(char* err, size_t len) {
  return guarded(err, len, [] { at::accelerator::emptyCache(); });
}

// Current allocated / reserved bytes and peak allocated bytes since the last reset.
int hmr2_device_stats(int device, int64_t* allocated, int64_t* reserved, int64_t* peak_allocated,
                      char* err, size_t len) {
  return guarded(err, len, [&] {
    auto stats = at::accelerator::getDeviceStats(static_cast<c10::DeviceIndex>(device));
    const auto agg = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
    *allocated = stats.allocated_bytes[agg].current;
    *reserved = stats.reserved_bytes[agg].current;
    *peak_allocated = stats.allocated_bytes[agg].peak;
  });
}

// Resets the peak statistics, so the next read gives the peak of one batch.
int hmr2_reset_peak_stats(int device, char* err, size_t len) {
  return guarded(err, len, [&] {
    at::accelerator::resetPeakStats(static_cast<c10::DeviceIndex>(device));
  });
}

// Free and total device memory as the driver sees it.
int hmr2_memory_info(int device, uint64_t* free_bytes, uint64_t* total_bytes, char* err,
                     size_t len) {
  return guarded(err, len, [&] {
    auto info = at::accelerator::getMemoryInfo(static_cast<c10::DeviceIndex>(device));
    *free_bytes = info.first;
    *total_bytes = info.second;
  });
}

}  // extern "C"
