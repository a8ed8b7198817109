// Argument checks at the Node-API boundary. The TypeScript wrapper validates first; these checks repeat the
// essentials so a direct caller of the addon gets a TypeError/RangeError instead of a crash. Message shape:
// `Expected <what> for <name> but received <summary>`.
#pragma once
#include <napi.h>

#include <cstddef>
#include <string>

namespace moe::addon {

// "Float32Array of length 63", "number 3", "string", "null", ...
std::string describe(const Napi::Value& v);

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

}  // namespace moe::addon
