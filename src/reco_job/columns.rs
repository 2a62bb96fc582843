//! From reconstructed events to RQ columns: the columns of a batch of
//! events ([`RqBuilder`]), units' columns appended to one another or to an
//! RQ writer with their index columns rebased, and the columns stored
//! without compression ([`PLAIN_COLUMNS`]).

use tpcflow_reco::EventRecon;

use crate::rq::{Column, ColumnData, RqError, RqFile, RqWriter};

/// The RQ columns of a range of events.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitOutput {
    /// `/events` columns.
    pub events: Vec<Column>,
    /// `/pulses` columns.
    pub pulses: Vec<Column>,
    /// `/channels` columns.
    pub channels: Vec<Column>,
    /// Events.
    pub n_events: u64,
    /// Pulses.
    pub n_pulses: u64,
    /// Raw sample bytes read.
    pub bytes_read: u64,
}

/// RQ datasets stored without shuffle + deflate: the full-precision float
/// columns that deflate shrinks by less than 1.5x (shuffled, zlib level 1, on
/// mixed events: the float pulse quantities and channel areas 1.19-1.46x, the
/// event positions, times and corrected areas 1.06-1.39x). Their deflate cost
/// a reco rank more than what it saved (`channels/area_phd` alone was a third
/// of the compression time; the small event columns pay deflate's fixed cost
/// per chunk). RQ files grow by 22-31 % (measured on 130 MB raw files of mixed
/// events; RQ files are ~2 % of raw), part of it the zero padding of a long
/// plain column's last chunk, stored as it is; every other column (indices,
/// counts, codes, integer times, areas of the main S1/S2 and fractions:
/// 1.9-84x) keeps shuffle + deflate.
pub const PLAIN_COLUMNS: &[&str] = &[
    "channels/area_phd",
    "pulses/center_ns",
    "pulses/area_phd",
    "pulses/area_top_phd",
    "pulses/area_bottom_phd",
    "pulses/height_phd",
    "pulses/rise_time_ns",
    "pulses/width_10_ns",
    "pulses/width_50_ns",
    "pulses/width_90_ns",
    "events/s1_time_ns",
    "events/s2_time_ns",
    "events/drift_time_ns",
    "events/x_mm",
    "events/y_mm",
    "events/z_mm",
    "events/sigma_x_mm",
    "events/sigma_y_mm",
    "events/xy_gof",
    "events/s1c_phd",
    "events/s2c_phd",
    "events/energy_kev",
    "events/total_area_phd",
];

macro_rules! columns {
    ($builders:ident; $($name:ident : $t:ty => $variant:ident, $units:literal, $doc:literal;)*) => {
        /// Column builders, one vector per quantity.
        #[derive(Debug, Default)]
        struct $builders { $($name: Vec<$t>,)* }
        impl $builders {
            fn with_capacity(n: usize) -> Self {
                Self { $($name: Vec::with_capacity(n),)* }
            }
            fn into_columns(self) -> Vec<Column> {
                vec![$(Column::new(stringify!($name), $units, $doc, ColumnData::$variant(self.$name)),)*]
            }
        }
    };
}

columns! {
    EventBuilders;
    event_id: u64 => U64, "1", "event number (unique within the run)";
    trigger_time_ns: i64 => I64, "ns", "S2 trigger time since the run start";
    first_pulse: u64 => U64, "1", "row of the event's first pulse in /pulses";
    n_pulses: u32 => U32, "1", "pulses of the event";
    n_pods: u32 => U32, "1", "pods (digitised records) of the event";
    n_s1: u32 => U32, "1", "pulses classified S1";
    n_s2: u32 => U32, "1", "pulses classified S2";
    n_se: u32 => U32, "1", "pulses classified single electron";
    n_spe: u32 => U32, "1", "pulses classified single phe";
    interaction: u8 => U8, "1", "0 no signal, 1 single scatter, 2 multiple scatter, 3 S2 only, 4 S1 only, 5 other";
    main_s1: i32 => I32, "1", "pulse index (within the event) of the main S1, -1 if none";
    main_s2: i32 => I32, "1", "pulse index (within the event) of the main S2, -1 if none";
    second_s2: i32 => I32, "1", "pulse index of the second-largest S2, -1 if none";
    n_significant_s2: u32 => U32, "1", "S2s above the multiple-scatter fraction of the main S2";
    s1_area_phd: f64 => F64, "phd", "main S1 area";
    s2_area_phd: f64 => F64, "phd", "main S2 area";
    second_s2_area_phd: f64 => F64, "phd", "second S2 area";
    s1_aft: f64 => F64, "1", "main S1 area fraction top";
    s2_aft: f64 => F64, "1", "main S2 area fraction top";
    s1_time_ns: f64 => F64, "ns", "main S1 time in the event window";
    s2_time_ns: f64 => F64, "ns", "main S2 time in the event window";
    drift_time_ns: f64 => F64, "ns", "main S2 time minus main S1 time";
    x_mm: f64 => F64, "mm", "x from the S2 top-array likelihood fit";
    y_mm: f64 => F64, "mm", "y from the S2 top-array likelihood fit";
    z_mm: f64 => F64, "mm", "z from the drift time (cathode at 0)";
    sigma_x_mm: f64 => F64, "mm", "uncertainty of x";
    sigma_y_mm: f64 => F64, "mm", "uncertainty of y";
    xy_gof: f64 => F64, "1", "xy fit goodness of fit (deviance per degree of freedom)";
    xy_flag: u8 => U8, "1", "xy fit: 0 fitted, 1 no S2 (not tried), 2 failed (NaN position, no S1c/S2c/energy)";
    s1c_phd: f64 => F64, "phd", "S1 corrected for light collection";
    s2c_phd: f64 => F64, "phd", "S2 corrected for electron lifetime and xy light collection";
    energy_kev: f64 => F64, "keV", "W (S1c/g1 + S2c/g2)";
    total_area_phd: f64 => F64, "phd", "area of all pulses";
}

columns! {
        PulseBuilders;
        event_id: u64 => U64, "1", "event number of the pulse";
        start_ns: i64 => I64, "ns", "first sample with signal, from the window start";
        end_ns: i64 => I64, "ns", "one past the last sample with signal";
        peak_ns: i64 => I64, "ns", "highest sample";
        center_ns: f64 => F64, "ns", "area-weighted centre";
        area_phd: f32 => F32, "phd", "total area";
        area_top_phd: f32 => F32, "phd", "area on the top array";
        area_bottom_phd: f32 => F32, "phd", "area on the bottom array";
        area_fraction_top: f32 => F32, "1", "area fraction top";
        height_phd: f32 => F32, "phd/sample", "highest sample of the summed waveform";
        rise_time_ns: f32 => F32, "ns", "time from 10% to 50% of the area";
        width_10_ns: f32 => F32, "ns", "width of the central 10% of the area";
        width_50_ns: f32 => F32, "ns", "width of the central 50% of the area";
        width_90_ns: f32 => F32, "ns", "width of the central 90% of the area";
        n_channels: u32 => U32, "1", "channels contributing area";
        coincidence: u32 => U32, "1", "channels with a hit near the peak";
        n_hits: u32 => U32, "1", "hits in the pulse";
        kind: u8 => U8, "1", "0 other, 1 S1, 2 S2, 3 single electron, 4 single phe";
        first_channel: u64 => U64, "1", "row of the pulse's first entry in /channels";
        n_channel_areas: u32 => U32, "1", "entries of the pulse in /channels";
}

columns! {
        ChannelBuilders;
        channel: u16 => U16, "1", "PMT channel (0-252 top, 253-493 bottom)";
        area_phd: f32 => F32, "phd", "area of the pulse on this channel";
}

/// Accumulates reconstructed events into columns.
#[derive(Debug, Default)]
pub struct RqBuilder {
    ev: EventBuilders,
    pu: PulseBuilders,
    ch: ChannelBuilders,
}

impl RqBuilder {
    /// A builder with room for `[events, pulses, channel areas]` rows (a
    /// batch's columns are built without growing when sized from the last).
    pub fn with_capacity(rows: [usize; 3]) -> Self {
        Self {
            ev: EventBuilders::with_capacity(rows[0]),
            pu: PulseBuilders::with_capacity(rows[1]),
            ch: ChannelBuilders::with_capacity(rows[2]),
        }
    }

    /// Rows so far: `[events, pulses, channel areas]`.
    pub fn rows(&self) -> [usize; 3] {
        [
            self.ev.event_id.len(),
            self.pu.event_id.len(),
            self.ch.channel.len(),
        ]
    }

    /// Add one event.
    pub fn push(&mut self, r: &EventRecon) {
        let e = &r.event;
        let b = &mut self.ev;
        b.event_id.push(e.event_id);
        b.trigger_time_ns.push(e.trigger_time_ns);
        b.first_pulse.push(self.pu.event_id.len() as u64);
        b.n_pulses.push(r.pulses.len() as u32);
        b.n_pods.push(e.n_pods);
        b.n_s1.push(e.n_s1);
        b.n_s2.push(e.n_s2);
        b.n_se.push(e.n_se);
        b.n_spe.push(e.n_spe);
        b.interaction.push(e.kind as u8);
        b.main_s1.push(e.main_s1);
        b.main_s2.push(e.main_s2);
        b.second_s2.push(e.second_s2);
        b.n_significant_s2.push(e.n_significant_s2);
        b.s1_area_phd.push(e.s1_area_phd);
        b.s2_area_phd.push(e.s2_area_phd);
        b.second_s2_area_phd.push(e.second_s2_area_phd);
        b.s1_aft.push(e.s1_aft);
        b.s2_aft.push(e.s2_aft);
        b.s1_time_ns.push(e.s1_time_ns);
        b.s2_time_ns.push(e.s2_time_ns);
        b.drift_time_ns.push(e.drift_time_ns);
        b.x_mm.push(e.x_mm);
        b.y_mm.push(e.y_mm);
        b.z_mm.push(e.z_mm);
        b.sigma_x_mm.push(e.sigma_x_mm);
        b.sigma_y_mm.push(e.sigma_y_mm);
        b.xy_gof.push(e.xy_gof);
        b.xy_flag.push(e.xy_flag);
        b.s1c_phd.push(e.s1c_phd);
        b.s2c_phd.push(e.s2c_phd);
        b.energy_kev.push(e.energy_kev);
        b.total_area_phd.push(e.total_area_phd);
        for (i, p) in r.pulses.iter().enumerate() {
            let q = &mut self.pu;
            q.event_id.push(e.event_id);
            q.start_ns.push(p.start_ns);
            q.end_ns.push(p.end_ns);
            q.peak_ns.push(p.peak_ns);
            q.center_ns.push(p.center_ns);
            q.area_phd.push(p.area_phd);
            q.area_top_phd.push(p.area_top_phd);
            q.area_bottom_phd.push(p.area_bottom_phd);
            q.area_fraction_top.push(p.area_fraction_top);
            q.height_phd.push(p.height_phd);
            q.rise_time_ns.push(p.rise_time_ns);
            q.width_10_ns.push(p.width_10_ns);
            q.width_50_ns.push(p.width_50_ns);
            q.width_90_ns.push(p.width_90_ns);
            q.n_channels.push(p.n_channels);
            q.coincidence.push(p.coincidence);
            q.n_hits.push(p.n_hits);
            q.kind.push(p.kind.code());
            q.first_channel.push(self.ch.channel.len() as u64);
            let areas = r.pulse_channel_areas(i);
            q.n_channel_areas.push(areas.len() as u32);
            self.ch.channel.extend(areas.iter().map(|a| a.channel));
            self.ch.area_phd.extend(areas.iter().map(|a| a.area_phd));
        }
    }

    /// The columns built so far.
    pub fn finish(self, bytes_read: u64) -> UnitOutput {
        let n_events = self.ev.event_id.len() as u64;
        let n_pulses = self.pu.event_id.len() as u64;
        UnitOutput {
            events: self.ev.into_columns(),
            pulses: self.pu.into_columns(),
            channels: self.ch.into_columns(),
            n_events,
            n_pulses,
            bytes_read,
        }
    }
}

fn offset_column(cols: &mut [Column], name: &str, by: u64) {
    if let Some(ColumnData::U64(v)) = cols
        .iter_mut()
        .find(|c| c.name == name)
        .map(|c| &mut c.data)
    {
        for x in v {
            *x += by;
        }
    }
}

fn column_len(cols: &[Column]) -> u64 {
    cols.first().map_or(0, |c| c.data.len() as u64)
}

impl UnitOutput {
    /// A part file read back (columns in file order, sorted by name).
    pub fn from_rq(f: RqFile, bytes_read: u64) -> Self {
        let n_events = column_len(&f.events);
        let n_pulses = column_len(&f.pulses);
        Self {
            events: f.events,
            pulses: f.pulses,
            channels: f.channels,
            n_events,
            n_pulses,
            bytes_read,
        }
    }

    /// Append the next part of the same file (index columns are re-based).
    ///
    /// # Panics
    /// When the parts have different column sets (they come from one writer).
    pub fn append(&mut self, mut next: UnitOutput) {
        offset_column(&mut next.events, "first_pulse", self.n_pulses);
        offset_column(
            &mut next.pulses,
            "first_channel",
            column_len(&self.channels),
        );
        for (groups, more) in [
            (&mut self.events, next.events),
            (&mut self.pulses, next.pulses),
            (&mut self.channels, next.channels),
        ] {
            sort_by_name(groups);
            let mut more = more;
            sort_by_name(&mut more);
            assert_eq!(
                groups.len(),
                more.len(),
                "parts of one file share their columns"
            );
            for (a, b) in groups.iter_mut().zip(&more) {
                assert_eq!(a.name, b.name, "parts of one file share their columns");
                a.data.extend(&b.data);
            }
        }
        self.n_events += next.n_events;
        self.n_pulses += next.n_pulses;
        self.bytes_read += next.bytes_read;
    }
}

fn sort_by_name(cols: &mut [Column]) {
    cols.sort_by(|a, b| a.name.cmp(&b.name));
}

/// Append a unit (or batch) to an RQ file being written, re-basing its index
/// columns (`first_pulse`, `first_channel`) on the rows already there.
///
/// # Errors
/// [`RqError`] from the writer.
pub fn append_to(w: &mut RqWriter, mut out: UnitOutput) -> Result<(), RqError> {
    let [_, pulses, channels] = w.rows();
    offset_column(&mut out.events, "first_pulse", pulses);
    offset_column(&mut out.pulses, "first_channel", channels);
    w.append(&out.events, &out.pulses, &out.channels)
}
