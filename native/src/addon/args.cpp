#include "args.h"

#include <cmath>

namespace moe::addon {

namespace {

std::string fmtNumber(double x) {
  if (std::isnan(x)) return "NaN";
  if (std::isinf(x)) return x > 0 ? "Infinity" : "-Infinity";
  std::string s = std::to_string(x);
  // Print integers as JS does (3 not 3.000000); other values keep %f precision.
  if (x == std::floor(x) && std::fabs(x) < 1e15) s = std::to_string(static_cast<long long>(x));
  return s;
}

[[noreturn]] void fail(Napi::Env env, bool rangeError, const std::string& what, const char* name,
                       const Napi::Value& v) {
  const std::string msg = "Expected " + what + " for " + name + " but received " + describe(v);
  if (rangeError) throw Napi::RangeError::New(env, msg);
  throw Napi::TypeError::New(env, msg);
}

std::string lengthText(const char* type, std::size_t n) { return std::string(type) + " of length " + std::to_string(n); }

}  // namespace

std::string describe(const Napi::Value& v) {
  if (v.IsTypedArray()) {
    const Napi::TypedArray t = v.As<Napi::TypedArray>();
    const char* kind = "TypedArray";
    switch (t.TypedArrayType()) {
      case napi_float32_array: kind = "Float32Array"; break;
      case napi_float64_array: kind = "Float64Array"; break;
      case napi_uint8_array: kind = "Uint8Array"; break;
      case napi_int32_array: kind = "Int32Array"; break;
      default: break;
    }
    return lengthText(kind, t.ElementLength());
  }
  if (v.IsNumber()) return "number " + fmtNumber(v.As<Napi::Number>().DoubleValue());
  if (v.IsString()) return "string";
  if (v.IsNull()) return "null";
  if (v.IsUndefined()) return "undefined";
  if (v.IsBoolean()) return "boolean";
  if (v.IsArray()) return "Array of length " + std::to_string(v.As<Napi::Array>().Length());
  if (v.IsFunction()) return "function";
  return "object";
}

static bool isKind(const Napi::Value& v, napi_typedarray_type k) {
  return v.IsTypedArray() && v.As<Napi::TypedArray>().TypedArrayType() == k;
}

Napi::Float32Array requireF32(const Napi::Value& v, const char* name, std::size_t length) {
  const std::string what = lengthText("Float32Array", length);
  if (!isKind(v, napi_float32_array)) fail(v.Env(), false, what, name, v);
  Napi::Float32Array a = v.As<Napi::Float32Array>();
  if (a.ElementLength() != length) fail(v.Env(), true, what, name, v);
  return a;
}

Napi::Float32Array optionalF32(const Napi::Value& v, const char* name, std::size_t length) {
  if (v.IsNull() || v.IsUndefined()) return Napi::Float32Array();
  const std::string what = lengthText("Float32Array", length) + " or null";
  if (!isKind(v, napi_float32_array)) fail(v.Env(), false, what, name, v);
  Napi::Float32Array a = v.As<Napi::Float32Array>();
  if (a.ElementLength() != length) fail(v.Env(), true, what, name, v);
  return a;
}

Napi::Uint8Array requireU8(const Napi::Value& v, const char* name, std::size_t length) {
  const std::string what = lengthText("Uint8Array", length);
  if (!isKind(v, napi_uint8_array)) fail(v.Env(), false, what, name, v);
  Napi::Uint8Array a = v.As<Napi::Uint8Array>();
  if (a.ElementLength() != length) fail(v.Env(), true, what, name, v);
  return a;
}

Napi::Float32Array requireAnyF32(const Napi::Value& v, const char* name) {
  if (!isKind(v, napi_float32_array)) fail(v.Env(), false, "Float32Array", name, v);
  return v.As<Napi::Float32Array>();
}

double requireNumber(const Napi::Value& v, const char* name, const char* what, bool (*ok)(double)) {
  if (!v.IsNumber()) fail(v.Env(), false, what, name, v);
  const double x = v.As<Napi::Number>().DoubleValue();
  if (!ok(x)) fail(v.Env(), true, what, name, v);
  return x;
}

std::string requireString(const Napi::Value& v, const char* name) {
  if (!v.IsString()) fail(v.Env(), false, "string", name, v);
  return v.As<Napi::String>().Utf8Value();
}

bool isPositiveFinite(double x) { return std::isfinite(x) && x > 0; }
bool isNonNegativeFinite(double x) { return std::isfinite(x) && x >= 0; }
bool isUnitInterval(double x) { return std::isfinite(x) && x >= 0 && x < 1; }
bool isAnyFinite(double x) { return std::isfinite(x); }

}  // namespace moe::addon
