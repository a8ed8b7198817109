// Argument checks at the Node-API boundary. The TypeScript wrapper validates first; these checks repeat the
// essentials so a direct caller of the addon gets a TypeError/RangeError instead of a crash or a quiet wrong answer.
// Message shape, the same as src/util/describe.ts prints: `Expected <what> for <name> but received <value>`.
#pragma once
#include <napi.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace moe::addon {

// The received value as src/util/describe.ts `describeValue` shows it: `"abc"` (JSON-quoted, cut to 40 UTF-16
// units), `17 of type number`, `true of type boolean`, `Float32Array of length 63`, `array of length 2`, `null`,
// `undefined`, else the typeof name (`object`, `function`, `symbol`).
std::string describe(const Napi::Value& v);

// Throws `Expected <what> for <name> but received <describe(v)>` as a RangeError or a TypeError.
[[noreturn]] void failExpected(Napi::Env env, bool rangeError, const std::string& what, const char* name,
                               const Napi::Value& v);

Napi::Float32Array requireF32(const Napi::Value& v, const char* name, std::size_t length);
// null → empty handle (IsEmpty() true).
Napi::Float32Array optionalF32(const Napi::Value& v, const char* name, std::size_t length);
Napi::Uint8Array requireU8(const Napi::Value& v, const char* name, std::size_t length);
// Any Float32Array (length checked by the caller); returns its length.
Napi::Float32Array requireAnyF32(const Napi::Value& v, const char* name);
double requireNumber(const Napi::Value& v, const char* name, const char* what, bool (*ok)(double));
std::string requireString(const Napi::Value& v, const char* name);

bool isPositiveFinite(double x);
bool isNonNegativeFinite(double x);
bool isUnitInterval(double x);  // [0, 1)
bool isAnyFinite(double x);

// Softmax temperature range, the same as TEMPERATURE_MIN / TEMPERATURE_MAX in src/router/native.ts (see there for
// why): at 1e-3 any logit gap above 0.02 is one-hot to float32 precision, at 1e3 every probability is within 2.5 %
// of 1/4 (logits are clipped to ±15), and far outside float32 breaks (below 1.2e-38 T is 0: z = ±15/0 gives Inf
// and NaN probabilities).
constexpr double kTemperatureMin = 1e-3;
constexpr double kTemperatureMax = 1e3;
bool isTemperature(double x);
extern const char* const kTemperatureText;  // "number in [0.001, 1000]"

// ---- shared memory ----
// Whether `buffer`, a typed array's buffer, is a SharedArrayBuffer. Node-API tells ArrayBuffers apart, and a typed
// array's buffer that is not one is shared. Shared memory can be neither detached nor shrunk, so async work may use
// it in place while a reference holds it, and a result copied back into it needs no check that it is still there.
bool isSharedBuffer(napi_env env, napi_value buffer);
// Whether a typed array's memory is a SharedArrayBuffer's (`isSharedBuffer` of its buffer).
bool onSharedMemory(Napi::Env env, const Napi::TypedArray& a);

// ---- finite-value scans and staging copies ----
// NaN and ±Inf are the floats whose exponent bits are all ones. Each scan ORs that test over blocks of 4096 values
// (the compiler vectorises it, no branch per value) and searches a block for the index only when it failed; the
// copy variant moves the values in the same pass. All three split work of 4 MB or more over up to 4 threads,
// the calling one included: one core moves ~7 GB/s, several share far more bandwidth. Measured for the 72 MB of
// x, vol and risk of 1e6 tokens at H = 16, on the H200 host's 16-core Xeon: copy + check 10.4 ms on one thread,
// 3.6-4.6 ms on four (plain memcpy on one: 10.3 ms; scan alone on one: 9 ms, on four ~2.5 ms); 2-core EPYC dev
// VM, one thread: copy + check 10.5 ms, scan 8.7 ms (memory-bound: the check adds ~1 ms to the copy).

// Index of the first NaN/±Inf in p[0, n), or n when every value is finite.
std::size_t findNonFinite(const float* p, std::size_t n);
// Copies src[0, n) to dst and returns the index of the first NaN/±Inf in src, or n (dst is then incomplete).
std::size_t copyFindNonFinite(float* dst, const float* src, std::size_t n);
void copyBytes(void* dst, const void* src, std::size_t bytes);
// Throws RangeError `Expected finite values for <name> but received NaN at index 17` when i < n.
void requireFiniteAt(Napi::Env env, const char* name, const float* p, std::size_t i, std::size_t n);
// findNonFinite + requireFiniteAt.
void requireFinite(Napi::Env env, const char* name, const float* p, std::size_t n);

}  // namespace moe::addon
