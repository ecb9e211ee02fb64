// Parallel HDF5 checkpoint files and the run directory's checkpoint set (see checkpoint.hpp).
// Every HDF5 call goes through DAA_H5 so that a failure carries the call, the file and HDF5's own
// innermost message; failures inside the collective write phase are recorded and the protocol
// continues on every rank, so that no rank waits alone in a collective call.
#include "daa/io/checkpoint.hpp"
#include "hdf5_handle.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <hdf5.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>

#include "daa/parallel/exchange.hpp"

namespace daa::io {
namespace {

using detail::Handle;
using detail::hdf5_detail;
using detail::silence_hdf5;

namespace fs = std::filesystem;

// H5Ovisit's callback changed its info type in HDF5 1.12.
#if H5_VERSION_GE(1, 12, 0)
using ObjectInfo = H5O_info2_t;
#define VISIT_FIELDS , H5O_INFO_BASIC
#else
using ObjectInfo = H5O_info_t;
#define VISIT_FIELDS
#endif

class Hdf5Failure : public std::runtime_error {
  using std::runtime_error::runtime_error;
};

template <class T>
T check_h5(T result, const char* call, const std::string& context) {
  if (result < 0) throw Hdf5Failure(fmt::format("{}: {} failed: {}", context, call, hdf5_detail()));
  return result;
}
#define DAA_H5(call, context) check_h5((call), #call, (context))

Handle file_access(const parallel::Communicator& comm) {
  Handle fapl(DAA_H5(H5Pcreate(H5P_FILE_ACCESS), "file access"), H5Pclose);
  DAA_H5(H5Pset_fapl_mpio(fapl.get(), comm.comm(), MPI_INFO_NULL), "file access");
  // Metadata reads and writes collective: one rank touches the disk, the others receive it.
  DAA_H5(H5Pset_all_coll_metadata_ops(fapl.get(), true), "file access");
  DAA_H5(H5Pset_coll_metadata_write(fapl.get(), true), "file access");
  // Metadata gathered in 64 KiB blocks instead of 2 KiB ones between the data: opening a file
  // of ~800 datasets reads a few blocks, not one small read per object header (same file size).
  DAA_H5(H5Pset_meta_block_size(fapl.get(), hsize_t(64) << 10), "file access");
  return fapl;
}

// Each rank transfers on its own: no synchronisation per dataset.
Handle independent_transfer() {
  Handle dxpl(DAA_H5(H5Pcreate(H5P_DATASET_XFER), "transfer"), H5Pclose);
  DAA_H5(H5Pset_dxpl_mpio(dxpl.get(), H5FD_MPIO_INDEPENDENT), "transfer");
  return dxpl;
}

// In-memory and on-disk HDF5 types of the numeric element types (text has its own, sized type).
hid_t memory_type(ElementType type) {
  return type == ElementType::f32   ? H5T_NATIVE_FLOAT
         : type == ElementType::f64 ? H5T_NATIVE_DOUBLE
                                    : H5T_NATIVE_INT64;
}
hid_t file_type(ElementType type) {
  return type == ElementType::f32   ? H5T_IEEE_F32LE
         : type == ElementType::f64 ? H5T_IEEE_F64LE
                                    : H5T_STD_I64LE;
}

// Fixed-length, NUL-padded string of `length` bytes (at least 1: HDF5 has no empty strings).
Handle text_type(std::uint64_t length) {
  Handle type(DAA_H5(H5Tcopy(H5T_C_S1), "text type"), H5Tclose);
  DAA_H5(H5Tset_size(type.get(), std::max<std::uint64_t>(length, 1)), "text type");
  DAA_H5(H5Tset_strpad(type.get(), H5T_STR_NULLPAD), "text type");
  return type;
}

std::uint32_t crc32_of(std::span<const std::byte> bytes) {
  uLong crc = crc32(0L, Z_NULL, 0);
  const auto* p = reinterpret_cast<const Bytef*>(bytes.data());
  for (std::size_t left = bytes.size(); left > 0;) {
    const auto n = static_cast<uInt>(std::min<std::size_t>(left, 1u << 30));
    crc = crc32(crc, p, n);
    p += n;
    left -= n;
  }
  return static_cast<std::uint32_t>(crc);
}

// What every rank learns about every piece before the file is created.
struct PieceHeader {
  std::string path;
  std::uint8_t type = 0;
  std::vector<std::uint64_t> dims;
  std::uint64_t row_begin = 0, rows = 0, bytes = 0;
  std::uint32_t crc = 0;
  int rank = 0;
  template <class Archive>
  void serialize(Archive& ar, unsigned /*version*/) {
    ar& path& type& dims& row_begin& rows& bytes& crc& rank;
  }
};

std::vector<PieceHeader> all_gather_headers(const parallel::Communicator& comm,
                                            const std::vector<PieceHeader>& mine) {
  std::vector<PieceHeader> headers;
  for (const std::vector<PieceHeader>& theirs : parallel::all_gather_object(comm, mine))
    headers.insert(headers.end(), theirs.begin(), theirs.end());
  return headers;
}

// One dataset of the file to be: its pieces in row order and the whole checksum.
struct PlannedDataset {
  std::string path;
  ElementType type = ElementType::f32;
  std::vector<std::uint64_t> dims;
  std::uint32_t crc = 0;
  std::uint64_t bytes = 0;
};

// Same input on every rank, same plan on every rank; an inconsistency is a bug in the caller.
std::vector<PlannedDataset> plan_datasets(std::vector<PieceHeader> headers) {
  std::sort(headers.begin(), headers.end(), [](const PieceHeader& a, const PieceHeader& b) {
    // An empty piece sorts before the piece that starts where it does: it tiles nothing.
    return std::tie(a.path, a.row_begin, a.rows) < std::tie(b.path, b.row_begin, b.rows);
  });
  std::vector<PlannedDataset> plan;
  for (std::size_t i = 0; i < headers.size();) {
    const PieceHeader& first = headers[i];
    PlannedDataset d{first.path, ElementType(first.type), first.dims, 0, 0};
    const std::uint64_t total_rows = d.dims.empty() ? 1 : d.dims[0];
    std::uint64_t next_row = 0;
    bool first_piece = true;
    for (; i < headers.size() && headers[i].path == first.path; ++i) {
      const PieceHeader& h = headers[i];
      if (h.type != first.type || h.dims != first.dims || h.row_begin != next_row)
        throw Error("io::CheckpointWriter: pieces of '" + h.path +
                    "' disagree on type or shape, or do not tile its rows");
      d.crc = first_piece ? h.crc : std::uint32_t(crc32_combine(d.crc, h.crc, z_off_t(h.bytes)));
      first_piece = false;
      d.bytes += h.bytes;
      next_row += h.rows;
    }
    if (next_row != total_rows)
      throw Error(fmt::format("io::CheckpointWriter: pieces of '{}' cover {} of its {} rows",
                              d.path, next_row, total_rows));
    plan.push_back(std::move(d));
  }
  return plan;
}

// Selects rows [begin, begin + rows) of `space` (all of it for a scalar).
void select_rows(hid_t space, const std::vector<std::uint64_t>& dims, std::uint64_t begin,
                 std::uint64_t rows, const std::string& context) {
  if (dims.empty()) {
    DAA_H5(H5Sselect_all(space), context);
    return;
  }
  std::vector<hsize_t> start(dims.size(), 0), count(dims.begin(), dims.end());
  start[0] = begin;
  count[0] = rows;
  DAA_H5(H5Sselect_hyperslab(space, H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr),
         context);
}

Handle simple_space(const std::vector<std::uint64_t>& dims, const std::string& context) {
  if (dims.empty()) return Handle(DAA_H5(H5Screate(H5S_SCALAR), context), H5Sclose);
  const std::vector<hsize_t> h(dims.begin(), dims.end());
  return Handle(DAA_H5(H5Screate_simple(int(h.size()), h.data(), nullptr), context), H5Sclose);
}

// A memory space holding `rows` rows of a dataset of shape `dims`.
Handle memory_space(const std::vector<std::uint64_t>& dims, std::uint64_t rows,
                    const std::string& context) {
  if (dims.empty()) return simple_space(dims, context);
  std::vector<std::uint64_t> shape = dims;
  shape[0] = rows;
  return simple_space(shape, context);
}

void fsync_path(const std::string& path, bool directory) {
  const int fd = ::open(path.c_str(), O_RDONLY | (directory ? O_DIRECTORY : 0));
  if (fd < 0 || ::fsync(fd) != 0) {
    const std::string why = std::strerror(errno);
    if (fd >= 0) ::close(fd);
    throw Error("cannot sync '" + path + "' to disk: " + why);
  }
  ::close(fd);
}

// HDF5 1.10 over MPI-IO does not recover from a write that fails partway (ENOSPC, EFBIG): closing
// the file fails, and the library then crashes at MPI_Finalize (OMPIO) or hangs (ROMIO). So the
// space is claimed first, with posix_fallocate, which fails cleanly on a full disk, a quota or a
// file-size limit; the file is then removed and written for real. (A disk that fills up in the
// moment between the two still hits the library's failure; earlier checkpoints survive even that.)
void reserve_space(const std::string& path, std::uint64_t bytes) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) throw Error("cannot create '" + path + "': " + std::strerror(errno));
  const int rc = ::posix_fallocate(fd, 0, off_t(bytes));
  ::close(fd);
  ::unlink(path.c_str());
  if (rc != 0)
    throw Error(fmt::format("cannot reserve {:.1f} MB for '{}': {}", double(bytes) * 1e-6, path,
                            std::strerror(rc)));
}

// Data plus a generous allowance for HDF5's metadata (object headers, links, attributes).
std::uint64_t estimated_file_size(std::span<const PlannedDataset> plan) {
  std::uint64_t bytes = 1 << 16;
  for (const PlannedDataset& d : plan) bytes += d.bytes + 2048;
  return bytes;
}

ElementType element_type_of(hid_t type, const std::string& path) {
  switch (H5Tget_class(type)) {
    case H5T_FLOAT:
      return H5Tget_size(type) == 4 ? ElementType::f32 : ElementType::f64;
    case H5T_INTEGER:
      if (H5Tget_size(type) == 8) return ElementType::i64;
      break;
    case H5T_STRING:
      return ElementType::text;
    default:
      break;
  }
  throw Hdf5Failure("dataset '" + path + "' has an element type this reader does not know");
}

}  // namespace

std::size_t element_size(ElementType type) {
  switch (type) {
    case ElementType::f32:
      return 4;
    case ElementType::f64:
    case ElementType::i64:
      return 8;
    case ElementType::text:
      return 1;
  }
  return 1;
}

std::uint64_t DatasetInfo::elements() const {
  std::uint64_t n = 1;
  for (std::uint64_t d : dims) n *= d;
  return n;
}

std::uint64_t DatasetInfo::row_elements() const {
  if (type == ElementType::text || dims.empty()) return elements();
  return dims[0] == 0 ? 0 : elements() / dims[0];
}

template <class T>
std::vector<T> DatasetValues::as() const {
  constexpr ElementType expected = std::is_same_v<T, float>    ? ElementType::f32
                                   : std::is_same_v<T, double> ? ElementType::f64
                                                               : ElementType::i64;
  if (type != expected) throw Error("io::DatasetValues::as: wrong element type");
  std::vector<T> values(bytes.size() / sizeof(T));
  std::memcpy(values.data(), bytes.data(), values.size() * sizeof(T));
  return values;
}
template std::vector<float> DatasetValues::as<float>() const;
template std::vector<double> DatasetValues::as<double>() const;
template std::vector<std::int64_t> DatasetValues::as<std::int64_t>() const;

std::string DatasetValues::text() const {
  std::string s(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  s.erase(std::find(s.begin(), s.end(), '\0'), s.end());
  return s;
}

// ---- writer ------------------------------------------------------------------------------------

CheckpointWriter::CheckpointWriter(const parallel::Communicator& comm) : comm_(comm) {
  silence_hdf5();
}

void CheckpointWriter::add(DatasetPiece piece) {
  pieces_.push_back(std::move(piece));
}

void CheckpointWriter::add_f32(const std::string& path, std::span<const float> values,
                               std::vector<std::uint64_t> dims) {
  const std::uint64_t rows = dims.empty() ? 1 : dims[0];
  add({path, ElementType::f32, std::move(dims), 0, rows, std::as_bytes(values)});
}
void CheckpointWriter::add_f64(const std::string& path, std::span<const double> values,
                               std::vector<std::uint64_t> dims) {
  const std::uint64_t rows = dims.empty() ? 1 : dims[0];
  add({path, ElementType::f64, std::move(dims), 0, rows, std::as_bytes(values)});
}
void CheckpointWriter::add_i64(const std::string& path, std::span<const std::int64_t> values,
                               std::vector<std::uint64_t> dims) {
  const std::uint64_t rows = dims.empty() ? 1 : dims[0];
  add({path, ElementType::i64, std::move(dims), 0, rows, std::as_bytes(values)});
}
void CheckpointWriter::add_scalar(const std::string& path, const std::int64_t& value) {
  owned_bytes_.emplace_back(sizeof value);
  std::memcpy(owned_bytes_.back().data(), &value, sizeof value);
  add({path, ElementType::i64, {}, 0, 1, owned_bytes_.back()});
}
void CheckpointWriter::add_scalar(const std::string& path, const double& value) {
  owned_bytes_.emplace_back(sizeof value);
  std::memcpy(owned_bytes_.back().data(), &value, sizeof value);
  add({path, ElementType::f64, {}, 0, 1, owned_bytes_.back()});
}
void CheckpointWriter::add_text(const std::string& path, const std::string& text) {
  // HDF5 strings have at least one byte: the empty text is stored as one NUL.
  owned_text_.push_back(text.empty() ? std::string(1, '\0') : text);
  add({path, ElementType::text, {}, 0, 1, std::as_bytes(std::span(owned_text_.back()))});
}

std::uint64_t CheckpointWriter::write(const std::string& path) {
  std::vector<PieceHeader> mine;
  std::map<std::string, const DatasetPiece*> my_piece;
  for (const DatasetPiece& p : pieces_) {
    if (!my_piece.emplace(p.path, &p).second)
      throw Error("io::CheckpointWriter: two pieces of '" + p.path + "' on one rank");
    mine.push_back({p.path, std::uint8_t(p.type), p.dims, p.row_begin, p.rows, p.bytes.size(),
                    crc32_of(p.bytes), comm_.rank()});
  }
  const std::vector<PlannedDataset> plan = plan_datasets(all_gather_headers(comm_, mine));
  std::string reserved;
  if (comm_.is_root()) try {
      reserve_space(path, estimated_file_size(plan));
    } catch (const std::exception& e) {
      reserved = e.what();
    }
  if (const std::string agreed = comm_.agree_on_message(reserved); !agreed.empty())
    throw Error("checkpoint: " + agreed);

  // From here on a failure is recorded, and the collective sequence goes on everywhere.
  std::string failure;
  auto attempt = [&](auto&& action) {
    if (!failure.empty()) return;
    try {
      action();
    } catch (const std::exception& e) {
      failure = e.what();
    }
  };
  const std::string context = "writing checkpoint '" + path + "'";
  Handle file;
  attempt([&] {
    const Handle fapl = file_access(comm_);
    file = Handle(DAA_H5(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get()), context),
                  H5Fclose);
  });
  std::uint64_t written = 0;
  if (failure.empty()) {  // H5Fcreate is collective: it failed everywhere or nowhere
    Handle lcpl, dcpl, independent, scalar;
    attempt([&] {
      lcpl = Handle(DAA_H5(H5Pcreate(H5P_LINK_CREATE), context), H5Pclose);
      DAA_H5(H5Pset_create_intermediate_group(lcpl.get(), 1), context);
      dcpl = Handle(DAA_H5(H5Pcreate(H5P_DATASET_CREATE), context), H5Pclose);
      // Every byte is written by its owner: no fill values to write first.
      DAA_H5(H5Pset_fill_time(dcpl.get(), H5D_FILL_TIME_NEVER), context);
      DAA_H5(H5Pset_alloc_time(dcpl.get(), H5D_ALLOC_TIME_EARLY), context);
      independent = independent_transfer();
      scalar = Handle(DAA_H5(H5Screate(H5S_SCALAR), context), H5Sclose);
    });
    for (const PlannedDataset& d : plan) {
      const std::string where = context + ", dataset '" + d.path + "'";
      Handle type, space, dataset, attribute, file_space, mem_space;
      // Metadata calls are collective and identical everywhere, so they fail everywhere or
      // nowhere; after a failure nothing more is created or written.
      attempt([&] {
        type = d.type == ElementType::text ? text_type(d.bytes)
                                           : Handle(H5Tcopy(file_type(d.type)), H5Tclose);
        space = simple_space(d.dims, where);
        dataset = Handle(DAA_H5(H5Dcreate2(file.get(), d.path.c_str(), type.get(), space.get(),
                                           lcpl.get(), dcpl.get(), H5P_DEFAULT),
                                where),
                         H5Dclose);
        attribute = Handle(DAA_H5(H5Acreate2(dataset.get(), "crc32", H5T_STD_U32LE, scalar.get(),
                                             H5P_DEFAULT, H5P_DEFAULT),
                                  where),
                           H5Aclose);
        DAA_H5(H5Awrite(attribute.get(), H5T_NATIVE_UINT32, &d.crc), where);
      });
      // Nothing to transfer (HDF5 cannot select within an empty extent); the same on every rank.
      if (dataset.get() < 0 || d.bytes == 0) continue;
      const auto it = my_piece.find(d.path);
      const DatasetPiece* piece = it == my_piece.end() ? nullptr : it->second;
      // Every piece is written independently by its rank, into its own rows of a contiguous,
      // early-allocated dataset: a collective transfer per dataset made every rank wait for
      // every other at each one (on 4 ranks ~0.25 ms a dataset, most of the write time), and
      // the pieces are large enough that collective buffering has nothing to merge.
      if (!piece) continue;
      try {
        file_space = Handle(DAA_H5(H5Dget_space(dataset.get()), where), H5Sclose);
        select_rows(file_space.get(), d.dims, piece->row_begin, piece->rows, where);
        mem_space = memory_space(d.dims, piece->rows, where);
        written += piece->bytes.size();
        const hid_t mem_type = d.type == ElementType::text ? type.get() : memory_type(d.type);
        DAA_H5(H5Dwrite(dataset.get(), mem_type, mem_space.get(), file_space.get(),
                        independent.get(), piece->bytes.data()),
               where);
      } catch (const std::exception& e) {
        if (failure.empty()) failure = e.what();
      }
    }
  }
  if (file.get() >= 0 && file.close() < 0 && failure.empty())
    failure = context + ": closing the file failed: " + hdf5_detail();
  // Collective close done: the data is in the file system; make it durable before anyone renames.
  if (comm_.is_root() && failure.empty()) attempt([&] { fsync_path(path, false); });
  const std::string agreed = comm_.agree_on_message(failure);
  if (!agreed.empty()) {
    if (comm_.is_root()) {
      std::error_code ignored;
      fs::remove(path, ignored);
    }
    // Not the input's fault: a full disk, a quota, a file-size limit, a failing file system.
    throw Error("checkpoint: " + agreed);
  }
  std::int64_t total = std::int64_t(written);
  comm_.allreduce_sum(&total, 1);
  return std::uint64_t(total);
}

// ---- reader ------------------------------------------------------------------------------------

CheckpointReader::CheckpointReader(const parallel::Communicator& comm, const std::string& path)
    : comm_(comm), path_(path) {
  silence_hdf5();
  std::string failure, without_checksum;
  std::error_code ec;
  if (!fs::is_regular_file(path, ec))
    failure = "'" + path + "' " + (fs::exists(path, ec) ? "is not a file" : "does not exist");
  if (!(failure = comm_.agree_on_message(failure)).empty()) throw CheckpointError(failure);

  try {
    const Handle fapl = file_access(comm_);
    file_ = H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl.get());
    if (file_ < 0)
      throw Hdf5Failure("'" + path + "' is not a readable HDF5 file (" + hdf5_detail() + ")");
    struct Visit {
      std::vector<DatasetInfo>* out;
      std::string error;
      std::string without_checksum;  // the first dataset without one, reported after the format
    } visit{&datasets_, {}, {}};
    const herr_t rc = H5Ovisit(
        hid_t(file_), H5_INDEX_NAME, H5_ITER_INC,
        [](hid_t root, const char* name, const ObjectInfo* info, void* data) -> herr_t {
          auto& v = *static_cast<Visit*>(data);
          if (info->type != H5O_TYPE_DATASET) return 0;
          const std::string path = std::string("/") + name;
          try {
            const std::string where = "dataset '" + path + "'";
            Handle dataset(DAA_H5(H5Dopen2(root, name, H5P_DEFAULT), where), H5Dclose);
            Handle type(DAA_H5(H5Dget_type(dataset.get()), where), H5Tclose);
            Handle space(DAA_H5(H5Dget_space(dataset.get()), where), H5Sclose);
            DatasetInfo d;
            d.path = path;
            d.type = element_type_of(type.get(), path);
            const int rank = DAA_H5(H5Sget_simple_extent_ndims(space.get()), where);
            std::vector<hsize_t> dims(std::size_t(rank), 0);
            DAA_H5(H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr), where);
            d.dims.assign(dims.begin(), dims.end());
            if (d.type == ElementType::text) d.dims = {H5Tget_size(type.get())};
            if (H5Aexists(dataset.get(), "crc32") > 0) {
              Handle attribute(DAA_H5(H5Aopen(dataset.get(), "crc32", H5P_DEFAULT), where),
                               H5Aclose);
              DAA_H5(H5Aread(attribute.get(), H5T_NATIVE_UINT32, &d.crc32), where);
            } else if (v.without_checksum.empty()) {
              v.without_checksum = path;
            }
            v.out->push_back(std::move(d));
          } catch (const std::exception& e) {
            v.error = e.what();
            return -1;
          }
          return 0;
        },
        &visit VISIT_FIELDS);
    if (!visit.error.empty()) throw Hdf5Failure("'" + path + "': " + visit.error);
    if (rc < 0)
      throw Hdf5Failure("'" + path + "': cannot list its datasets (" + hdf5_detail() + ")");
    std::sort(datasets_.begin(), datasets_.end(),
              [](const DatasetInfo& a, const DatasetInfo& b) { return a.path < b.path; });
    without_checksum = visit.without_checksum;
  } catch (const std::exception& e) {
    failure = e.what();
  }
  if (!(failure = comm_.agree_on_message(failure)).empty()) {
    if (file_ >= 0) H5Fclose(hid_t(file_));
    file_ = -1;
    throw CheckpointError(failure);
  }
  // The format name and version come before anything else is trusted.
  std::vector<ReadRequest> identity(2);
  identity[0].path = "/meta/format";
  identity[1].path = "/meta/format_version";
  if (!find(identity[0].path) || !find(identity[1].path))
    failure = "'" + path + "' is an HDF5 file but not a daa-swarm checkpoint (no /meta/format)";
  else
    try {
      for (ReadRequest& r : identity) {
        const DatasetInfo& d = *find(r.path);
        r.out.type = d.type;
        r.out.bytes.resize(d.elements() * element_size(d.type));
        Handle dataset(DAA_H5(H5Dopen2(hid_t(file_), r.path.c_str(), H5P_DEFAULT), r.path),
                       H5Dclose);
        Handle type(DAA_H5(H5Dget_type(dataset.get()), r.path), H5Tclose);
        const hid_t mem = d.type == ElementType::text ? type.get() : memory_type(d.type);
        DAA_H5(H5Dread(dataset.get(), mem, H5S_ALL, H5S_ALL, H5P_DEFAULT, r.out.bytes.data()),
               r.path);
      }
      if (identity[0].out.text() != kCheckpointFormatName ||
          identity[1].out.type != ElementType::i64)
        failure = "'" + path + "' is an HDF5 file but not a daa-swarm checkpoint";
      else if (const std::int64_t v = identity[1].out.as<std::int64_t>().at(0);
               v != kCheckpointFormatVersion)
        failure = fmt::format("'{}' has format version {}; this daa-swarm reads version {} only",
                              path, v, kCheckpointFormatVersion);
      else if (!without_checksum.empty())
        failure = "'" + path + "': dataset '" + without_checksum + "' has no crc32 attribute";
    } catch (const std::exception& e) {
      failure = "'" + path + "': " + e.what();
    }
  if (!(failure = comm_.agree_on_message(failure)).empty()) {
    H5Fclose(hid_t(file_));
    file_ = -1;
    throw CheckpointError(failure);
  }
}

CheckpointReader::~CheckpointReader() {
  if (file_ >= 0) H5Fclose(hid_t(file_));
}

const DatasetInfo* CheckpointReader::find(const std::string& path) const {
  const auto it =
      std::lower_bound(datasets_.begin(), datasets_.end(), path,
                       [](const DatasetInfo& d, const std::string& p) { return d.path < p; });
  return it != datasets_.end() && it->path == path ? &*it : nullptr;
}

void CheckpointReader::read(std::span<ReadRequest> requests) {
  std::string failure;
  std::map<std::string, ReadRequest*> wanted;
  for (ReadRequest& r : requests) {
    const DatasetInfo* d = find(r.path);
    if (!d) {
      if (!r.optional && failure.empty())
        failure = "'" + path_ + "' has no dataset '" + r.path + "'";
      continue;
    }
    const std::uint64_t rows = d->dims.empty() || d->type == ElementType::text ? 1 : d->dims[0];
    if (r.rows == ReadRequest::kAllRows) r.rows = rows - std::min(rows, r.row_begin);
    if (r.row_begin + r.rows > rows && failure.empty())
      failure = fmt::format("'{}': dataset '{}' has {} rows, {} requested from row {}", path_,
                            r.path, rows, r.rows, r.row_begin);
    if (!wanted.emplace(r.path, &r).second)
      throw Error("io::CheckpointReader::read: '" + r.path + "' requested twice");
  }
  if (!(failure = comm_.agree_on_message(failure)).empty()) throw CheckpointError(failure);

  // Independent reads: each rank reads what it verifies or asked for, and nothing else, without
  // waiting for the others at every dataset. (A collective read is no option anyway: Open MPI
  // 4.1's OMPIO (fcoll vulcan/dynamic) hands wrong bytes to a rank in a collective read whose
  // selections overlap, as the verifier's whole dataset and the other ranks' rows do.)
  const Handle dxpl = independent_transfer();
  std::vector<std::byte> whole;
  for (std::size_t i = 0; i < datasets_.size(); ++i) {
    const DatasetInfo& d = datasets_[i];
    const bool verifier = int(i % std::size_t(comm_.size())) == comm_.rank();
    const auto it = wanted.find(d.path);
    ReadRequest* request = it == wanted.end() ? nullptr : it->second;
    const bool text = d.type == ElementType::text;
    const std::uint64_t rows = d.dims.empty() || text ? 1 : d.dims[0];
    const std::uint64_t row_bytes = rows == 0 ? 0 : d.elements() * element_size(d.type) / rows;
    const std::string where = "'" + path_ + "': dataset '" + d.path + "'";
    if (d.elements() == 0) {  // nothing to transfer, the same on every rank
      if (verifier && d.crc32 != crc32_of({}) && failure.empty())
        failure =
            fmt::format("{} is corrupt: it is empty, its stored crc32 is {:08x}", where, d.crc32);
      if (request) request->out = {d.type, {}};
      continue;
    }
    try {
      Handle dataset(DAA_H5(H5Dopen2(hid_t(file_), d.path.c_str(), H5P_DEFAULT), where), H5Dclose);
      Handle type(DAA_H5(H5Dget_type(dataset.get()), where), H5Tclose);
      Handle file_space(DAA_H5(H5Dget_space(dataset.get()), where), H5Sclose);
      Handle mem_space;
      // The verifier reads the whole dataset; a requester its rows; everyone else nothing.
      const bool read_whole = verifier || (request && request->rows == rows);
      const std::uint64_t begin = read_whole ? 0 : request ? request->row_begin : 0;
      const std::uint64_t count = read_whole ? rows : request ? request->rows : 0;
      std::vector<std::byte>* buffer = read_whole ? &whole
                                       : request  ? &request->out.bytes
                                                  : nullptr;
      if (!buffer) continue;  // H5Dopen2 above is collective; the read is not
      buffer->resize(count * row_bytes);
      select_rows(file_space.get(), text ? std::vector<std::uint64_t>{} : d.dims, begin, count,
                  where);
      mem_space = memory_space(text ? std::vector<std::uint64_t>{} : d.dims, count, where);
      static std::byte dummy{};
      const hid_t mem_type = text ? type.get() : memory_type(d.type);
      DAA_H5(H5Dread(dataset.get(), mem_type, mem_space.get(), file_space.get(), dxpl.get(),
                     buffer->empty() ? &dummy : buffer->data()),
             where);
      if (verifier && crc32_of(whole) != d.crc32)
        throw Hdf5Failure(fmt::format("{} is corrupt: its crc32 is {:08x}, stored {:08x}", where,
                                      crc32_of(whole), d.crc32));
      if (request) {
        request->out.type = d.type;
        if (read_whole) {
          const auto from = std::ptrdiff_t(request->row_begin * row_bytes);
          request->out.bytes.assign(
              whole.begin() + from,
              whole.begin() + from + std::ptrdiff_t(request->rows * row_bytes));
        }
      }
    } catch (const std::exception& e) {
      if (failure.empty()) failure = e.what();
    }
  }
  if (!(failure = comm_.agree_on_message(failure)).empty()) {
    for (ReadRequest& r : requests) r.out.bytes.clear();
    throw CheckpointError(failure);
  }
}

// ---- the checkpoint set of a run directory --------------------------------------------------

std::string checkpoint_file_name(std::int64_t step) {
  return fmt::format("step-{:08d}.h5", step);
}

std::optional<std::int64_t> checkpoint_step(const std::string& name) {
  if (name.size() < 9 || name.rfind("step-", 0) != 0 || !name.ends_with(".h5")) return {};
  const std::string digits = name.substr(5, name.size() - 8);
  // At most 18 digits: every such number fits an int64_t (std::stoll throws beyond).
  if (digits.empty() || digits.size() > 18 ||
      !std::all_of(digits.begin(), digits.end(), [](unsigned char c) { return std::isdigit(c); }))
    return {};
  return std::stoll(digits);
}

namespace {
std::vector<CheckpointCandidate> list_checkpoints(const std::string& dir) {
  std::vector<CheckpointCandidate> found;
  std::error_code ec;
  for (const fs::directory_entry& e : fs::directory_iterator(dir, ec))
    if (const auto step = checkpoint_step(e.path().filename().string());
        step && e.is_regular_file())
      found.push_back({e.path().string(), *step});
  std::sort(
      found.begin(), found.end(),
      [](const CheckpointCandidate& a, const CheckpointCandidate& b) { return a.step > b.step; });
  return found;
}
}  // namespace

std::vector<CheckpointCandidate> restart_candidates(const std::string& dir,
                                                    std::vector<std::string>& notes) {
  std::vector<CheckpointCandidate> found = list_checkpoints(dir);
  const std::string latest_path = (fs::path(dir) / "latest").string();
  std::ifstream in(latest_path);
  std::string name;
  if (!in || !std::getline(in, name)) {
    if (!found.empty())
      notes.push_back("no 'latest' pointer in '" + dir + "'; trying its checkpoints by step");
    return found;
  }
  const auto it = std::find_if(found.begin(), found.end(), [&](const CheckpointCandidate& c) {
    return fs::path(c.path).filename() == name;
  });
  if (it == found.end()) {
    notes.push_back("'" + latest_path + "' names '" + name +
                    "', which is not there; trying the checkpoints by step");
    return found;
  }
  std::rotate(found.begin(), it, it + 1);
  return found;
}

void publish_checkpoint(const std::string& dir, const std::string& temp,
                        const std::string& final_path, std::int64_t step, int keep) {
  std::error_code ec;
  fs::rename(temp, final_path, ec);
  if (ec) throw Error("cannot rename '" + temp + "' to '" + final_path + "': " + ec.message());
  fsync_path(dir, true);
  // `latest` is replaced by rename: a reader sees the old pointer or the new one, never half.
  const std::string latest = (fs::path(dir) / "latest").string();
  {
    std::ofstream out(latest + ".tmp", std::ios::trunc);
    out << fs::path(final_path).filename().string() << '\n';
    out.close();
    if (!out) throw Error("cannot write '" + latest + ".tmp'");
  }
  fsync_path(latest + ".tmp", false);
  fs::rename(latest + ".tmp", latest, ec);
  if (ec) throw Error("cannot replace '" + latest + "': " + ec.message());
  fsync_path(dir, true);
  if (keep <= 0) return;
  int kept = 0;
  for (const CheckpointCandidate& c : list_checkpoints(dir)) {
    if (c.step > step) continue;  // an abandoned continuation: not ours to delete
    if (++kept > keep) fs::remove(c.path, ec);
  }
}

}  // namespace daa::io
