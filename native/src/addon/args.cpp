#include "args.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <system_error>
#include <thread>
#include <vector>

#include "moe_router/router.h"

namespace moe::addon {

namespace {

// Longest excerpt of a received string a message quotes, in UTF-16 units (EXCERPT_CHARS in src/util/describe.ts).
constexpr std::size_t kExcerptUnits = 40;

void appendUtf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += char(0xE0 | (cp >> 12));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  } else {
    out += char(0xF0 | (cp >> 18));
    out += char(0x80 | ((cp >> 12) & 0x3F));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  }
}

void appendEscape(std::string& out, char16_t unit) {
  static const char* const hex = "0123456789abcdef";
  out += "\\u";
  for (int shift = 12; shift >= 0; shift -= 4) out += hex[(unit >> shift) & 0xF];
}

// JSON.stringify(s.slice(0, 40)) plus `… (<length> chars)` when cut: the same text describeValue prints, so a
// message reads the same whichever layer threw it. Works on UTF-16 units because JS slices and counts in them;
// a surrogate pair cut in half is escaped (\ud83d), as JSON.stringify does with a lone surrogate.
std::string quoted(const std::u16string& s) {
  const bool cut = s.size() > kExcerptUnits;
  const std::size_t end = cut ? kExcerptUnits : s.size();
  std::string out = "\"";
  for (std::size_t i = 0; i < end; ++i) {
    const char16_t c = s[i];
    switch (c) {
      case u'"': out += "\\\""; continue;
      case u'\\': out += "\\\\"; continue;
      case u'\b': out += "\\b"; continue;
      case u'\f': out += "\\f"; continue;
      case u'\n': out += "\\n"; continue;
      case u'\r': out += "\\r"; continue;
      case u'\t': out += "\\t"; continue;
      default: break;
    }
    if (c < 0x20) {
      appendEscape(out, c);
    } else if (c >= 0xD800 && c <= 0xDBFF && i + 1 < end && s[i + 1] >= 0xDC00 && s[i + 1] <= 0xDFFF) {
      appendUtf8(out, 0x10000 + ((char32_t(c) - 0xD800) << 10) + (char32_t(s[i + 1]) - 0xDC00));
      ++i;
    } else if (c >= 0xD800 && c <= 0xDFFF) {
      appendEscape(out, c);
    } else {
      appendUtf8(out, c);
    }
  }
  out += '"';
  if (cut) out += "\xE2\x80\xA6 (" + std::to_string(s.size()) + " chars)";  // "… (N chars)"
  return out;
}

std::string lengthText(const char* type, std::size_t n) { return std::string(type) + " of length " + std::to_string(n); }

const char* typedArrayName(napi_typedarray_type t) {
  switch (t) {
    case napi_int8_array: return "Int8Array";
    case napi_uint8_array: return "Uint8Array";
    case napi_uint8_clamped_array: return "Uint8ClampedArray";
    case napi_int16_array: return "Int16Array";
    case napi_uint16_array: return "Uint16Array";
    case napi_int32_array: return "Int32Array";
    case napi_uint32_array: return "Uint32Array";
    case napi_float32_array: return "Float32Array";
    case napi_float64_array: return "Float64Array";
    case napi_bigint64_array: return "BigInt64Array";
    case napi_biguint64_array: return "BigUint64Array";
    default: return "TypedArray";
  }
}

// The threads' ranges split at multiples of the core's scan block (firstNonFinite, copyFirstNonFinite: 4,096 values).
constexpr std::size_t kScanBlock = 4096;

}  // namespace

std::string describe(const Napi::Value& v) {
  if (v.IsEmpty() || v.IsUndefined()) return "undefined";
  if (v.IsNull()) return "null";
  if (v.IsString()) return quoted(v.As<Napi::String>().Utf16Value());
  // ToString is JS's own number formatting (1.5, 1e-300, NaN, -Infinity), so both layers print the same digits.
  if (v.IsNumber()) return v.ToString().Utf8Value() + " of type number";
  if (v.IsBoolean()) return std::string(v.As<Napi::Boolean>().Value() ? "true" : "false") + " of type boolean";
  if (v.IsBigInt()) return v.ToString().Utf8Value() + " of type bigint";
  if (v.IsTypedArray()) {
    const Napi::TypedArray t = v.As<Napi::TypedArray>();
    return lengthText(typedArrayName(t.TypedArrayType()), t.ElementLength());
  }
  if (v.IsArray()) return "array of length " + std::to_string(v.As<Napi::Array>().Length());
  if (v.IsFunction()) return "function";
  if (v.IsSymbol()) return "symbol";
  return "object";
}

void failExpected(Napi::Env env, bool rangeError, const std::string& what, const char* name, const Napi::Value& v) {
  const std::string msg = "Expected " + what + " for " + name + " but received " + describe(v);
  if (rangeError) throw Napi::RangeError::New(env, msg);
  throw Napi::TypeError::New(env, msg);
}

static bool isKind(const Napi::Value& v, napi_typedarray_type k) {
  return v.IsTypedArray() && v.As<Napi::TypedArray>().TypedArrayType() == k;
}

Napi::Float32Array requireF32(const Napi::Value& v, const char* name, std::size_t length) {
  const std::string what = lengthText("Float32Array", length);
  if (!isKind(v, napi_float32_array)) failExpected(v.Env(), false, what, name, v);
  Napi::Float32Array a = v.As<Napi::Float32Array>();
  if (a.ElementLength() != length) failExpected(v.Env(), true, what, name, v);
  return a;
}

Napi::Float32Array optionalF32(const Napi::Value& v, const char* name, std::size_t length) {
  if (v.IsNull() || v.IsUndefined()) return Napi::Float32Array();
  const std::string what = lengthText("Float32Array", length) + " or null";
  if (!isKind(v, napi_float32_array)) failExpected(v.Env(), false, what, name, v);
  Napi::Float32Array a = v.As<Napi::Float32Array>();
  if (a.ElementLength() != length) failExpected(v.Env(), true, what, name, v);
  return a;
}

Napi::Uint8Array requireU8(const Napi::Value& v, const char* name, std::size_t length) {
  const std::string what = lengthText("Uint8Array", length);
  if (!isKind(v, napi_uint8_array)) failExpected(v.Env(), false, what, name, v);
  Napi::Uint8Array a = v.As<Napi::Uint8Array>();
  if (a.ElementLength() != length) failExpected(v.Env(), true, what, name, v);
  return a;
}

Napi::Float32Array requireAnyF32(const Napi::Value& v, const char* name) {
  if (!isKind(v, napi_float32_array)) failExpected(v.Env(), false, "Float32Array", name, v);
  return v.As<Napi::Float32Array>();
}

double requireNumber(const Napi::Value& v, const char* name, const char* what, bool (*ok)(double)) {
  if (!v.IsNumber()) failExpected(v.Env(), false, what, name, v);
  const double x = v.As<Napi::Number>().DoubleValue();
  if (!ok(x)) failExpected(v.Env(), true, what, name, v);
  return x;
}

std::string requireString(const Napi::Value& v, const char* name) {
  if (!v.IsString()) failExpected(v.Env(), false, "string", name, v);
  return v.As<Napi::String>().Utf8Value();
}

bool isPositiveFinite(double x) { return std::isfinite(x) && x > 0; }
bool isNonNegativeFinite(double x) { return std::isfinite(x) && x >= 0; }
bool isUnitInterval(double x) { return std::isfinite(x) && x >= 0 && x < 1; }
bool isAnyFinite(double x) { return std::isfinite(x); }
bool isTemperature(double x) { return x >= kTemperatureMin && x <= kTemperatureMax; }  // false for NaN
const char* const kTemperatureText = "number in [0.001, 1000]";

namespace {

// Most threads one scan or copy uses: most of the bandwidth on the hosts measured, a few tens of µs to start.
constexpr unsigned kCopyThreads = 4;
// Below this a range takes under ~0.5 ms on one core: a thread would cost more than it saves.
constexpr std::size_t kMinBytesPerThread = std::size_t(4) << 20;

unsigned partsFor(std::size_t bytes) {
  const unsigned hw = std::max(1u, std::thread::hardware_concurrency());
  return unsigned(std::max<std::size_t>(1, std::min<std::size_t>({std::size_t(kCopyThreads), hw, bytes / kMinBytesPerThread})));
}

// Runs fn(begin, end) over [0, n) in contiguous ranges of whole scan blocks, one per part, the calling thread
// taking the first; returns the smallest value fn returns (fn returns `end` when it found nothing). Where no
// thread can be started (resource limits) the calling thread does that range itself.
template <class Fn>
std::size_t splitMin(std::size_t n, std::size_t elementBytes, Fn fn) {
  const unsigned parts = partsFor(n * elementBytes);
  if (parts <= 1) return fn(std::size_t(0), n);
  const std::size_t step = ((n + parts - 1) / parts + kScanBlock - 1) / kScanBlock * kScanBlock;
  std::vector<std::size_t> found(parts, n);
  auto run = [&](unsigned k) {
    const std::size_t b = std::min(n, step * k), e = std::min(n, step * (k + 1));
    const std::size_t i = fn(b, e);
    if (i < e) found[k] = i;
  };
  std::vector<std::thread> pool;
  for (unsigned k = 1; k < parts; ++k) {
    try {
      pool.emplace_back(run, k);
    } catch (const std::system_error&) {
      run(k);
    }
  }
  run(0);
  for (auto& t : pool) t.join();
  return *std::min_element(found.begin(), found.end());
}

}  // namespace

bool isSharedBuffer(napi_env env, napi_value buffer) {
  bool plain = false;
  return buffer != nullptr && napi_is_arraybuffer(env, buffer, &plain) == napi_ok && !plain;
}

bool onSharedMemory(Napi::Env env, const Napi::TypedArray& a) {
  napi_value buffer = nullptr;
  return napi_get_typedarray_info(env, a, nullptr, nullptr, nullptr, &buffer, nullptr) == napi_ok &&
         isSharedBuffer(env, buffer);
}

std::size_t findNonFinite(const float* p, std::size_t n) {
  return splitMin(n, sizeof(float), [p](std::size_t b, std::size_t e) { return b + firstNonFinite(p + b, e - b); });
}

std::size_t copyFindNonFinite(float* dst, const float* src, std::size_t n) {
  return splitMin(n, sizeof(float),
                  [dst, src](std::size_t b, std::size_t e) { return b + copyFirstNonFinite(dst + b, src + b, e - b); });
}

void copyBytes(void* dst, const void* src, std::size_t bytes) {
  auto* d = static_cast<std::uint8_t*>(dst);
  const auto* s = static_cast<const std::uint8_t*>(src);
  splitMin(bytes, 1, [d, s](std::size_t b, std::size_t e) {
    if (e > b) std::memcpy(d + b, s + b, e - b);
    return e;
  });
}

void requireFiniteAt(Napi::Env env, const char* name, const float* p, std::size_t i, std::size_t n) {
  if (i >= n) return;
  throw Napi::RangeError::New(env, nonFiniteMessage(name, p[i], i));
}

void requireFinite(Napi::Env env, const char* name, const float* p, std::size_t n) {
  requireFiniteAt(env, name, p, findNonFinite(p, n), n);
}

}  // namespace moe::addon
