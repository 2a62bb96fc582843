//! RQ datasets created straight through the HDF5 C API.
//!
//! A reco rank creates 55 datasets and 110 string attributes per output file.
//! Through hdf5-metno's builders each one copies and closes several property
//! lists, datatypes and dataspaces; here one creation property list per chunk
//! layout, one dataspace and one string type serve a whole group (the time it
//! saves per file is in docs/performance.md). The file is the same: chunked along
//! rows, growable, shuffle + deflate (or no filter for a plain column), and
//! `units` and `description` as scalar variable-length UTF-8 strings.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::path::Path;

use hdf5_sys::h5::{herr_t, hsize_t};
use hdf5_sys::h5i::hid_t;
use hdf5_sys::h5p::H5P_DEFAULT;
use hdf5_sys::h5s::{H5S_class_t, H5S_UNLIMITED};
use hdf5_sys::h5t::{H5T_cset_t, H5T_VARIABLE};

use super::{h5err, ColumnData, RqError};

/// An HDF5 identifier closed when dropped.
struct Id {
    id: hid_t,
    close: unsafe extern "C" fn(hid_t) -> herr_t,
}

impl Drop for Id {
    fn drop(&mut self) {
        // SAFETY: `id` came from the matching constructor and is closed once.
        let _ = hdf5::sync::sync(|| unsafe { (self.close)(self.id) });
    }
}

/// Reusable creation inputs for the datasets of one group.
pub(crate) struct Creator {
    /// Dataset creation property lists: filtered, plain.
    dcpl: [Id; 2],
    /// Dataspace: 0 rows, growable.
    space: Id,
    /// Scalar dataspace of the attributes.
    scalar: Id,
    /// Variable-length UTF-8 string type.
    string: Id,
}

/// `value` when it is not HDF5's error code, else the library's error
/// naming the file and `what`.
fn check(id: hid_t, path: &Path, what: &str) -> Result<hid_t, RqError> {
    hdf5::h5check(id).map_err(h5err(path, what))
}

/// [`check`] for a status return.
fn check_rc(rc: herr_t, path: &Path, what: &str) -> Result<(), RqError> {
    hdf5::h5check(rc).map(|_| ()).map_err(h5err(path, what))
}

fn cstring(s: &str, path: &Path, what: &str) -> Result<CString, RqError> {
    CString::new(s).map_err(|_| RqError::Hdf5 {
        path: path.to_path_buf(),
        what: what.to_string(),
        message: "contains a NUL byte".into(),
    })
}

impl Creator {
    /// Property lists for chunks of `chunk_rows` rows, deflate at `level`.
    pub(crate) fn new(chunk_rows: usize, level: u8, path: &Path) -> Result<Self, RqError> {
        use hdf5_sys::{h5p, h5s, h5t};
        hdf5::sync::sync(|| {
            // SAFETY: plain HDF5 calls on identifiers created here; every
            // identifier is owned by an `Id` as soon as it exists, so it is
            // closed on every path; pointers passed live across each call.
            unsafe {
                let dcpl = |filtered: bool| -> Result<Id, RqError> {
                    let id = Id {
                        id: check(
                            h5p::H5Pcreate(*h5p::H5P_CLS_DATASET_CREATE),
                            path,
                            "dataset creation properties",
                        )?,
                        close: h5p::H5Pclose,
                    };
                    let dims = [chunk_rows.max(1) as hsize_t];
                    check_rc(h5p::H5Pset_chunk(id.id, 1, dims.as_ptr()), path, "chunk")?;
                    if filtered {
                        check_rc(h5p::H5Pset_shuffle(id.id), path, "shuffle")?;
                        check_rc(
                            h5p::H5Pset_deflate(id.id, u32::from(level)),
                            path,
                            "deflate",
                        )?;
                    }
                    Ok(id)
                };
                let dcpl = [dcpl(true)?, dcpl(false)?];
                let (cur, max) = ([0 as hsize_t], [H5S_UNLIMITED]);
                let space = Id {
                    id: check(
                        h5s::H5Screate_simple(1, cur.as_ptr(), max.as_ptr()),
                        path,
                        "dataspace",
                    )?,
                    close: h5s::H5Sclose,
                };
                let scalar = Id {
                    id: check(
                        h5s::H5Screate(H5S_class_t::H5S_SCALAR),
                        path,
                        "scalar dataspace",
                    )?,
                    close: h5s::H5Sclose,
                };
                let string = Id {
                    id: check(h5t::H5Tcopy(*h5t::H5T_C_S1), path, "string type")?,
                    close: h5t::H5Tclose,
                };
                check_rc(
                    h5t::H5Tset_size(string.id, H5T_VARIABLE),
                    path,
                    "string type",
                )?;
                check_rc(
                    h5t::H5Tset_cset(string.id, H5T_cset_t::H5T_CSET_UTF8),
                    path,
                    "string type",
                )?;
                Ok(Self {
                    dcpl,
                    space,
                    scalar,
                    string,
                })
            }
        })
    }

    /// Create dataset `name` in `group` for `data`'s value type, with its
    /// `units` and `description` attributes.
    pub(crate) fn dataset(
        &self,
        group: &hdf5::Group,
        name: &str,
        data: &ColumnData,
        plain: bool,
        attrs: [(&str, &str); 2],
        path: &Path,
    ) -> Result<hdf5::Dataset, RqError> {
        use hdf5_sys::{h5a, h5d, h5t};
        let c_name = cstring(name, path, name)?;
        let attrs = attrs
            .iter()
            .map(|(k, v)| {
                let what = format!("{name}@{k}");
                Ok((cstring(k, path, &what)?, cstring(v, path, &what)?, what))
            })
            .collect::<Result<Vec<_>, RqError>>()?;
        hdf5::sync::sync(|| {
            // SAFETY: the type globals are valid once HDF5 is initialised (the
            // file was opened through hdf5-metno); `group` is live for the
            // call; the new dataset's identifier is handed to an owning
            // `hdf5::Dataset` at once; attribute identifiers are closed by
            // `Id`; the string pointers outlive the calls that read them.
            unsafe {
                let dtype = match data {
                    ColumnData::F32(_) => *h5t::H5T_NATIVE_FLOAT,
                    ColumnData::F64(_) => *h5t::H5T_NATIVE_DOUBLE,
                    ColumnData::I64(_) => *h5t::H5T_NATIVE_INT64,
                    ColumnData::I32(_) => *h5t::H5T_NATIVE_INT32,
                    ColumnData::U64(_) => *h5t::H5T_NATIVE_UINT64,
                    ColumnData::U32(_) => *h5t::H5T_NATIVE_UINT32,
                    ColumnData::U16(_) => *h5t::H5T_NATIVE_UINT16,
                    ColumnData::U8(_) => *h5t::H5T_NATIVE_UINT8,
                };
                let dcpl = &self.dcpl[usize::from(plain)];
                let id = check(
                    h5d::H5Dcreate2(
                        group.id(),
                        c_name.as_ptr(),
                        dtype,
                        self.space.id,
                        H5P_DEFAULT,
                        dcpl.id,
                        H5P_DEFAULT,
                    ),
                    path,
                    name,
                )?;
                let ds: hdf5::Dataset = hdf5::from_id(id).map_err(|e| RqError::Hdf5 {
                    path: path.to_path_buf(),
                    what: name.to_string(),
                    message: e.to_string(),
                })?;
                for (key, value, what) in &attrs {
                    let attr = Id {
                        id: check(
                            h5a::H5Acreate2(
                                id,
                                key.as_ptr(),
                                self.string.id,
                                self.scalar.id,
                                H5P_DEFAULT,
                                H5P_DEFAULT,
                            ),
                            path,
                            what,
                        )?,
                        close: h5a::H5Aclose,
                    };
                    // A variable-length string is written as a pointer to it.
                    let ptr = value.as_ptr();
                    check_rc(
                        h5a::H5Awrite(attr.id, self.string.id, std::ptr::addr_of!(ptr).cast()),
                        path,
                        what,
                    )?;
                }
                Ok(ds)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datasets_have_the_layout_filters_and_attributes_and_bad_names_are_typed_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.h5");
        let file = crate::h5::create(&path).unwrap();
        let group = file.create_group("pulses").unwrap();
        let creator = Creator::new(100, 1, &path).unwrap();
        let data = ColumnData::U32(vec![1, 2, 3]);
        let ds = creator
            .dataset(
                &group,
                "n_hits",
                &data,
                false,
                [("units", "1"), ("description", "hits")],
                &path,
            )
            .unwrap();
        let plain = creator
            .dataset(
                &group,
                "area_phd",
                &ColumnData::F32(vec![]),
                true,
                [("units", "phd"), ("description", "é")],
                &path,
            )
            .unwrap();
        assert_eq!(ds.chunk(), Some(vec![100]));
        assert!(ds.is_resizable());
        let filters = ds.filters();
        assert_eq!(filters.len(), 2, "{filters:?}");
        assert!(plain.filters().is_empty());
        assert_eq!(plain.dtype().unwrap().size(), 4);
        let units: hdf5::types::VarLenUnicode = ds.attr("units").unwrap().read_scalar().unwrap();
        assert_eq!(units.as_str(), "1");
        let d: hdf5::types::VarLenUnicode =
            plain.attr("description").unwrap().read_scalar().unwrap();
        assert_eq!(d.as_str(), "é");

        let refused = |name: &str| {
            creator
                .dataset(
                    &group,
                    name,
                    &data,
                    false,
                    [("units", "1"), ("description", "x")],
                    &path,
                )
                .unwrap_err()
                .to_string()
        };
        let err = refused("a\0b");
        assert!(err.contains("c.h5") && err.contains("NUL"), "{err}");
        // An existing name: HDF5's own error, naming file and dataset.
        let err = refused("n_hits");
        assert!(err.contains("c.h5") && err.contains("n_hits"), "{err}");
    }
}
