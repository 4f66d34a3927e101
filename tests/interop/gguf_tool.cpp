// gguf_tool copy IN OUT   read IN with lowbit, write it back with lowbit
// gguf_tool dump IN       one JSON object per line: each metadata pair (key,
//                         type, value), then each tensor (name, type, shape,
//                         offset, size, fnv1a64 of its bytes)
// The interop tests drive it against the `gguf` Python package.

#include <lowbit/formats/gguf.hpp>

#include "tool_main.hpp"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>
#include <string_view>

namespace {

using lowbit_tool::fnv1a64;

std::string json_string(std::string_view s) {
    std::string out = "\"";
    for (const char ch : s) {
        const auto c = static_cast<unsigned char>(ch);
        switch (c) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        default:
            if (c < 0x20 || c == 0x7f) {
                char buf[8];
                std::snprintf(buf, sizeof buf, "\\u%04x", c);
                out += buf;
            } else {
                out += static_cast<char>(c);
            }
        }
    }
    return out + "\"";
}

// JSON has no NaN or infinity: those go out as strings Python's float() reads.
std::string json_number(double x, int digits) {
    if (std::isnan(x)) return "\"nan\"";
    if (std::isinf(x)) return x > 0 ? "\"inf\"" : "\"-inf\"";
    char buf[40];
    std::snprintf(buf, sizeof buf, "%.*g", digits, x);
    return buf;
}

template <class T>
std::string json_scalar(const T& x) {
    if constexpr (std::is_same_v<T, bool>)
        return x ? "true" : "false";
    else if constexpr (std::is_same_v<T, float>)
        return json_number(x, 9);
    else if constexpr (std::is_same_v<T, double>)
        return json_number(x, 17);
    else if constexpr (std::is_same_v<T, std::string>)
        return json_string(x);
    else
        return std::to_string(x);
}

std::string json_array(const lowbit::gguf_array& a);

std::string json_value(const lowbit::gguf_value& v) {
    return std::visit(
        [](const auto& x) -> std::string {
            using T = std::decay_t<decltype(x)>;
            if constexpr (std::is_same_v<T, lowbit::gguf_array>)
                return json_array(x);
            else
                return json_scalar(x);
        },
        v);
}

// {"element_type": ..., "items": [...]}, nested the same way for arrays of arrays.
std::string json_array(const lowbit::gguf_array& a) {
    std::string out = "{\"element_type\":\"" + std::string(lowbit::to_string(a.element_type())) + "\",\"items\":[";
    std::visit(
        [&](const auto& items) {
            bool first = true;
            for (const auto& x : items) {
                if (!first) out += ',';
                first = false;
                using T = typename std::decay_t<decltype(items)>::value_type;
                if constexpr (std::is_same_v<T, lowbit::gguf_array>)
                    out += json_array(x);
                else
                    out += json_scalar(static_cast<T>(x));
            }
        },
        a.items());
    return out + "]}";
}

void dump(const lowbit::gguf_file& f) {
    std::printf("{\"version\":%u,\"alignment\":%u,\"data_offset\":%llu}\n", f.version(), f.alignment(),
                static_cast<unsigned long long>(f.data_offset()));
    for (const auto& kv : f.metadata())
        std::printf("{\"key\":%s,\"type\":\"%s\",\"value\":%s}\n", json_string(kv.key).c_str(),
                    std::string(lowbit::to_string(lowbit::type_of(kv.value))).c_str(), json_value(kv.value).c_str());
    for (const auto& t : f.tensors()) {
        std::string shape = "[";
        for (std::size_t d = 0; d < t.shape.size(); ++d) {
            if (d) shape += ',';
            shape += std::to_string(t.shape[d]);
        }
        shape += "]";
        std::printf("{\"tensor\":%s,\"type\":%u,\"shape\":%s,\"offset\":%llu,\"size\":%llu,\"fnv1a64\":\"%016llx\"}\n",
                    json_string(t.name).c_str(), static_cast<unsigned>(t.type), shape.c_str(),
                    static_cast<unsigned long long>(t.offset), static_cast<unsigned long long>(t.size),
                    static_cast<unsigned long long>(fnv1a64(f.tensor(t))));
    }
}

}  // namespace

int main(int argc, char** argv) {
    return lowbit_tool::tool_main(argc, argv, "gguf_tool copy IN OUT | gguf_tool dump IN", [](const auto& a) {
        using path = std::filesystem::path;
        if (a.size() == 3 && a[0] == "copy") {
            const auto f = lowbit::read_gguf(path(a[1]));
            lowbit::gguf_writer::from(f).write(path(a[2]));
        } else if (a.size() == 2 && a[0] == "dump") {
            dump(lowbit::read_gguf(path(a[1])));
        } else {
            return false;
        }
        return true;
    });
}
