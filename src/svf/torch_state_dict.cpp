#include "t2/svf/torch_state_dict.hpp"

#include <cstring>
#include <map>
#include <memory>

#include <caffe2/serialize/inline_container.h>

#include "t2/common/errors.hpp"

namespace t2::svf {
namespace {

struct Value;
using ValuePtr = std::shared_ptr<Value>;

// The pickle values a state_dict of tensors consists of.
struct Value {
  enum class Kind { kNone, kBool, kInt, kString, kTuple, kDict, kGlobal, kStorage, kTensor };
  Kind kind = Kind::kNone;
  int64_t integer = 0;                                // kBool, kInt; kStorage: numel
  std::string text;                                   // kString; kGlobal: "module.name"; kStorage: record key
  std::vector<ValuePtr> items;                        // kTuple
  std::vector<std::pair<ValuePtr, ValuePtr>> entries; // kDict, in insertion order
  at::ScalarType dtype = at::kFloat;                  // kStorage
  at::Tensor tensor;                                  // kTensor

  static ValuePtr make(Kind kind) {
    auto v = std::make_shared<Value>();
    v->kind = kind;
    return v;
  }
};

const char* kind_name(Value::Kind kind) {
  switch (kind) {
    case Value::Kind::kNone: return "None";
    case Value::Kind::kBool: return "bool";
    case Value::Kind::kInt: return "int";
    case Value::Kind::kString: return "str";
    case Value::Kind::kTuple: return "tuple";
    case Value::Kind::kDict: return "dict";
    case Value::Kind::kGlobal: return "class";
    case Value::Kind::kStorage: return "storage";
    case Value::Kind::kTensor: return "tensor";
  }
  return "?";
}

const std::map<std::string, at::ScalarType>& storage_types() {
  static const std::map<std::string, at::ScalarType> types = {
      {"torch.FloatStorage", at::kFloat},   {"torch.DoubleStorage", at::kDouble},
      {"torch.HalfStorage", at::kHalf},     {"torch.BFloat16Storage", at::kBFloat16}};
  return types;
}

class StateDictUnpickler {
 public:
  StateDictUnpickler(std::string where, caffe2::serialize::PyTorchStreamReader& archive, const char* data, size_t size)
      : where_(std::move(where)), archive_(archive), data_(data), size_(size) {}

  ValuePtr run() {
    while (true) {
      const size_t at = pos_;
      const auto op = static_cast<unsigned char>(take(1)[0]);
      switch (op) {
        case 0x80: take(1); break;  // PROTO
        case 0x95: take(8); break;  // FRAME
        case '.':                   // STOP
          if (stack_.size() != 1 || !marks_.empty()) fail(at, "STOP with a malformed stack");
          return stack_.back();
        case '(': marks_.push_back(stack_.size()); break;
        case 'c': {  // GLOBAL
          const std::string module = line();
          const std::string name = line();
          auto v = Value::make(Value::Kind::kGlobal);
          v->text = module + "." + name;
          if (v->text != "collections.OrderedDict" && v->text != "torch._utils._rebuild_tensor_v2" &&
              v->text != "torch._utils._rebuild_parameter" && !storage_types().count(v->text)) {
            fail(at, "refers to " + v->text + ", which a state_dict of float tensors does not hold");
          }
          push(v);
          break;
        }
        case 'q': memo_[u8()] = top(at); break;        // BINPUT
        case 'r': memo_[u32()] = top(at); break;       // LONG_BINPUT
        case 0x94: memo_[memo_.size()] = top(at); break;  // MEMOIZE
        case 'h': push(memo(at, u8())); break;         // BINGET
        case 'j': push(memo(at, u32())); break;        // LONG_BINGET
        case ')': push(Value::make(Value::Kind::kTuple)); break;
        case 't': {
          auto v = Value::make(Value::Kind::kTuple);
          v->items = pop_to_mark(at);
          push(v);
          break;
        }
        case 0x85: case 0x86: case 0x87: {  // TUPLE1..3
          const size_t n = op - 0x84;
          if (stack_.size() < n + (marks_.empty() ? 0 : marks_.back())) fail(at, "TUPLE on a short stack");
          auto v = Value::make(Value::Kind::kTuple);
          v->items.assign(stack_.end() - static_cast<std::ptrdiff_t>(n), stack_.end());
          stack_.resize(stack_.size() - n);
          push(v);
          break;
        }
        case '}': push(Value::make(Value::Kind::kDict)); break;
        case 's': {  // SETITEM
          const ValuePtr value = pop(at);
          const ValuePtr key = pop(at);
          dict(at, top(at))->entries.emplace_back(key, value);
          break;
        }
        case 'u': {  // SETITEMS
          std::vector<ValuePtr> items = pop_to_mark(at);
          if (items.size() % 2 != 0) fail(at, "SETITEMS with an odd number of items");
          Value* d = dict(at, top(at));
          for (size_t i = 0; i < items.size(); i += 2) d->entries.emplace_back(items[i], items[i + 1]);
          break;
        }
        case 'X': push(string(u32())); break;     // BINUNICODE
        case 0x8c: push(string(u8())); break;     // SHORT_BINUNICODE
        case 'K': push(integer(u8())); break;     // BININT1
        case 'M': push(integer(u16())); break;    // BININT2
        case 'J': push(integer(static_cast<int32_t>(u32()))); break;  // BININT
        case 0x8a: push(integer(long1(at))); break;                    // LONG1
        case 'N': push(Value::make(Value::Kind::kNone)); break;
        case 0x88: case 0x89: {  // NEWTRUE, NEWFALSE
          auto v = Value::make(Value::Kind::kBool);
          v->integer = op == 0x88;
          push(v);
          break;
        }
        case 'Q': {  // BINPERSID
          push(storage(at, pop(at)));
          break;
        }
        case 'R': {  // REDUCE
          const ValuePtr args = pop(at);
          const ValuePtr callable = pop(at);
          push(reduce(at, *callable, *args));
          break;
        }
        case 'b': {  // BUILD: only an OrderedDict's attributes (state_dict()'s _metadata), which t2 ignores
          const ValuePtr state = pop(at);
          if (top(at)->kind != Value::Kind::kDict ||
              (state->kind != Value::Kind::kDict && state->kind != Value::Kind::kNone)) {
            fail(at, "BUILD of something other than an OrderedDict's attributes");
          }
          break;
        }
        default: {
          char hex[8];
          std::snprintf(hex, sizeof(hex), "0x%02x", op);
          fail(at, std::string("pickle opcode ") + hex + " is not part of what torch.save writes for a state_dict");
        }
      }
    }
  }

 private:
  [[noreturn]] void fail(size_t at, const std::string& what) const {
    throw LoadError(where_ + ": data.pkl at byte " + std::to_string(at) + ": " + what);
  }
  const char* take(size_t n) {
    if (n > size_ - pos_) fail(pos_, "truncated");
    const char* p = data_ + pos_;
    pos_ += n;
    return p;
  }
  uint64_t le(size_t n) {
    const auto* p = reinterpret_cast<const unsigned char*>(take(n));
    uint64_t v = 0;
    for (size_t i = 0; i < n; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
    return v;
  }
  uint32_t u8() { return static_cast<uint32_t>(le(1)); }
  uint32_t u16() { return static_cast<uint32_t>(le(2)); }
  uint32_t u32() { return static_cast<uint32_t>(le(4)); }
  int64_t long1(size_t at) {
    const uint32_t n = u8();
    if (n > 8) fail(at, "integer wider than 64 bits");
    if (n == 0) return 0;
    uint64_t v = le(n);
    if (n < 8 && (v >> (8 * n - 1)) & 1) v |= ~uint64_t{0} << (8 * n);  // sign-extend
    return static_cast<int64_t>(v);
  }
  std::string line() {
    const size_t start = pos_;
    while (pos_ < size_ && data_[pos_] != '\n') ++pos_;
    if (pos_ == size_) fail(start, "truncated");
    return std::string(data_ + start, data_ + pos_++);
  }
  static ValuePtr integer(int64_t i) {
    auto v = Value::make(Value::Kind::kInt);
    v->integer = i;
    return v;
  }
  ValuePtr string(size_t n) {
    auto v = Value::make(Value::Kind::kString);
    v->text.assign(take(n), n);
    return v;
  }
  void push(ValuePtr v) { stack_.push_back(std::move(v)); }
  const ValuePtr& top(size_t at) const {
    if (stack_.empty() || (!marks_.empty() && stack_.size() <= marks_.back())) fail(at, "empty stack");
    return stack_.back();
  }
  ValuePtr pop(size_t at) {
    ValuePtr v = top(at);
    stack_.pop_back();
    return v;
  }
  std::vector<ValuePtr> pop_to_mark(size_t at) {
    if (marks_.empty()) fail(at, "no MARK");
    const size_t mark = marks_.back();
    marks_.pop_back();
    std::vector<ValuePtr> items(stack_.begin() + static_cast<std::ptrdiff_t>(mark), stack_.end());
    stack_.resize(mark);
    return items;
  }
  ValuePtr memo(size_t at, size_t index) const {
    const auto it = memo_.find(index);
    if (it == memo_.end()) fail(at, "memo " + std::to_string(index) + " was never stored");
    return it->second;
  }
  Value* dict(size_t at, const ValuePtr& v) const {
    if (v->kind != Value::Kind::kDict) fail(at, std::string("SETITEM on a ") + kind_name(v->kind));
    return v.get();
  }

  // ('storage', torch.XStorage, key, location, numel)
  ValuePtr storage(size_t at, const ValuePtr& pid) {
    const auto& f = pid->items;
    if (pid->kind != Value::Kind::kTuple || f.size() != 5 || f[0]->kind != Value::Kind::kString ||
        f[0]->text != "storage" || f[1]->kind != Value::Kind::kGlobal || !storage_types().count(f[1]->text) ||
        f[2]->kind != Value::Kind::kString || f[4]->kind != Value::Kind::kInt || f[4]->integer < 0) {
      fail(at, "a persistent id other than ('storage', torch.<float type>Storage, key, location, numel)");
    }
    auto v = Value::make(Value::Kind::kStorage);
    v->dtype = storage_types().at(f[1]->text);
    v->text = f[2]->text;
    v->integer = f[4]->integer;
    return v;
  }

  at::Tensor load_storage(size_t at, const Value& s) {
    const auto cached = storages_.find(s.text);
    if (cached != storages_.end()) return cached->second;
    const std::string record = "data/" + s.text;
    if (!archive_.hasRecord(record)) fail(at, "the archive lacks " + record);
    at::Tensor t = at::empty({s.integer}, at::TensorOptions().dtype(s.dtype));
    const size_t expected = static_cast<size_t>(t.nbytes());
    auto [ptr, bytes] = archive_.getRecord(record);
    if (bytes != expected) {
      fail(at, record + " holds " + std::to_string(bytes) + " bytes, not the " + std::to_string(expected) +
                   " its storage declares");
    }
    if (bytes > 0) std::memcpy(t.data_ptr(), ptr.get(), bytes);
    storages_.emplace(s.text, t);
    return t;
  }

  ValuePtr reduce(size_t at, const Value& callable, const Value& args) {
    if (callable.kind != Value::Kind::kGlobal || args.kind != Value::Kind::kTuple) fail(at, "REDUCE of a non-class");
    const auto& a = args.items;
    if (callable.text == "collections.OrderedDict") {
      if (!a.empty()) fail(at, "OrderedDict built from arguments");
      return Value::make(Value::Kind::kDict);
    }
    if (callable.text == "torch._utils._rebuild_parameter") {  // (tensor, requires_grad, backward_hooks)
      if (a.size() != 3 || a[0]->kind != Value::Kind::kTensor) fail(at, "_rebuild_parameter without a tensor");
      return a[0];
    }
    if (callable.text == "torch._utils._rebuild_tensor_v2") {
      // (storage, offset, size, stride, requires_grad, backward_hooks[, metadata])
      if (a.size() < 6 || a.size() > 7 || a[0]->kind != Value::Kind::kStorage || a[1]->kind != Value::Kind::kInt ||
          a[2]->kind != Value::Kind::kTuple || a[3]->kind != Value::Kind::kTuple ||
          a[2]->items.size() != a[3]->items.size()) {
        fail(at, "_rebuild_tensor_v2 with unexpected arguments");
      }
      std::vector<int64_t> sizes, strides;
      int64_t last = a[1]->integer;  // the highest element index the view reaches
      bool empty = false;
      for (size_t i = 0; i < a[2]->items.size(); ++i) {
        const auto& n = a[2]->items[i];
        const auto& st = a[3]->items[i];
        if (n->kind != Value::Kind::kInt || st->kind != Value::Kind::kInt || n->integer < 0 || st->integer < 0) {
          fail(at, "tensor size/stride is not a tuple of non-negative ints");
        }
        sizes.push_back(n->integer);
        strides.push_back(st->integer);
        if (n->integer == 0) empty = true;
        else last += (n->integer - 1) * st->integer;
      }
      const at::Tensor storage = load_storage(at, *a[0]);
      if (a[1]->integer < 0 || (!empty && last >= storage.numel())) fail(at, "tensor view outside its storage");
      auto v = Value::make(Value::Kind::kTensor);
      v->tensor = empty ? at::empty(sizes, storage.options()) : storage.as_strided(sizes, strides, a[1]->integer).clone();
      return v;
    }
    fail(at, "REDUCE of " + callable.text);
  }

  std::string where_;
  caffe2::serialize::PyTorchStreamReader& archive_;
  const char* data_;
  size_t size_;
  size_t pos_ = 0;
  std::vector<ValuePtr> stack_;
  std::vector<size_t> marks_;
  std::map<size_t, ValuePtr> memo_;
  std::map<std::string, at::Tensor> storages_;
};

}  // namespace

std::vector<std::pair<std::string, at::Tensor>> read_torch_state_dict(const std::filesystem::path& file) {
  const std::string where = file.string();
  std::unique_ptr<caffe2::serialize::PyTorchStreamReader> archive;
  try {
    archive = std::make_unique<caffe2::serialize::PyTorchStreamReader>(where);
  } catch (const c10::Error& e) {
    throw LoadError(where + ": not a torch.save zip archive: " + e.what_without_backtrace());
  }
  if (archive->hasRecord("byteorder")) {
    auto [ptr, bytes] = archive->getRecord("byteorder");
    const std::string order(static_cast<const char*>(ptr.get()), bytes);
    if (order != "little") throw LoadError(where + ": saved with byte order '" + order + "'; t2 reads little-endian");
  }
  if (!archive->hasRecord("data.pkl")) throw LoadError(where + ": the archive has no data.pkl");
  auto [pickle, size] = archive->getRecord("data.pkl");
  StateDictUnpickler unpickler(where, *archive, static_cast<const char*>(pickle.get()), size);
  const ValuePtr root = unpickler.run();
  if (root->kind != Value::Kind::kDict) {
    throw LoadError(where + ": holds a " + std::string(kind_name(root->kind)) + ", not a dict of name -> tensor");
  }
  std::vector<std::pair<std::string, at::Tensor>> entries;
  for (const auto& [key, value] : root->entries) {
    if (key->kind != Value::Kind::kString || value->kind != Value::Kind::kTensor) {
      throw LoadError(where + ": an entry maps a " + kind_name(key->kind) + " to a " + kind_name(value->kind) +
                      "; expected parameter name -> tensor");
    }
    entries.emplace_back(key->text, value->tensor);
  }
  return entries;
}

}  // namespace t2::svf
