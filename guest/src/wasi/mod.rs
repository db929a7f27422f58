//! The WASI 0.2 binding: the WIT exports here, the command line in `run`, the wasi-http
//! transport in `http`, concurrent blob downloads in `fetch`, stream and file adapters in
//! `streams`, and WIT <-> operation conversions in `convert`.

mod convert;
mod fetch;
mod http;
mod run;
mod streams;

use crate::error::Error;
use crate::inventory::{self, Inventory};
use crate::ops::{self, Options, Summary};
use crate::registry::{Reporter, Transport};
use convert::pull_request;
use http::WasiHttp;
use std::io::Read;
use streams::{FileArchive, StreamReader, StreamWriter};
use wasip2::filesystem::types::Descriptor;
use wasip2::io::streams::{InputStream, OutputStream};

wit_bindgen::generate!({
    world: "imo",
    path: "../wit",
    with: {
        "wasi:io/error@0.2.12": wasip2::io::error,
        "wasi:io/poll@0.2.12": wasip2::io::poll,
        "wasi:io/streams@0.2.12": wasip2::io::streams,
        "wasi:filesystem/types@0.2.12": wasip2::filesystem::types,
        "wasi:clocks/wall-clock@0.2.12": wasip2::clocks::wall_clock,
    },
});

use exports::imo::overlay::overlay as wit;

struct Component;

export!(Component);

impl wit::Guest for Component {
    fn pull(
        base: String,
        final_: String,
        archive: &OutputStream,
        options: wit::Options,
    ) -> Result<wit::Summary, wit::Error> {
        // `pull` is `pull-bundle` with one base and one final.
        let request = wit::Bundle {
            bases: vec![base],
            inventories: vec![],
            finals: vec![final_],
        };
        Self::pull_bundle(request, archive, options)
    }

    fn pull_bundle(
        request: wit::Bundle,
        archive: &OutputStream,
        options: wit::Options,
    ) -> Result<wit::Summary, wit::Error> {
        let options = Options::from(options);
        ops::pull_bundle(
            &WasiHttp::default(),
            &options,
            &reporter(&options),
            &pull_request(request),
            &mut StreamWriter(archive),
        )
        .map(Into::into)
        .map_err(Into::into)
    }

    fn pull_bundle_to_file(
        request: wit::Bundle,
        archive: &Descriptor,
        options: wit::Options,
    ) -> Result<wit::Summary, wit::Error> {
        let options = Options::from(options);
        let http = WasiHttp::default();
        ops::pull_bundle_to_file(
            &http,
            &http,
            &options,
            &reporter(&options),
            &pull_request(request),
            &FileArchive(archive),
        )
        .map(Into::into)
        .map_err(Into::into)
    }

    fn inventory(sources: Vec<String>, options: wit::Options) -> Result<String, wit::Error> {
        let options = Options::from(options);
        let inventory = ops::inventory(
            &WasiHttp::default(),
            &options,
            &reporter(&options),
            &sources,
            vec![],
        )?;
        Ok(json_text(&inventory))
    }

    fn inventory_add_archive(
        into: String,
        name: String,
        archive: &InputStream,
        options: wit::Options,
    ) -> Result<String, wit::Error> {
        let options = Options::from(options);
        let mut builder = inventory::Builder::default();
        if !into.is_empty() {
            let so_far =
                Inventory::parse("so far", into.as_bytes()).map_err(Error::InvalidArchive)?;
            builder.merge(&so_far);
        }
        let added = ops::inventory(
            &WasiHttp::default(),
            &options,
            &reporter(&options),
            &[],
            vec![(name, &mut StreamReader(archive) as &mut dyn Read)],
        )?;
        builder.merge(&added);
        Ok(json_text(&builder.build()))
    }

    fn push_vet(
        archive: &InputStream,
        destination: String,
        options: wit::Options,
    ) -> Result<wit::Summary, wit::Error> {
        from_archive(ops::push_vet, archive, &destination, options)
    }

    fn push(
        archive: &InputStream,
        destination: String,
        options: wit::Options,
    ) -> Result<wit::Summary, wit::Error> {
        from_archive(ops::push, archive, &destination, options)
    }

    fn verify(archive: &InputStream) -> Result<String, wit::Error> {
        let report = crate::archive::verify(&mut StreamReader(archive));
        Ok(serde_json::to_string(&report).expect("a report serialises"))
    }

    fn pull_bundle_to_file_plan(
        request: wit::Bundle,
        archive: &Descriptor,
        options: wit::Options,
    ) -> Result<wit::PullPlan, wit::Error> {
        let options = Options::from(options);
        ops::plan_bundle_to_file(
            &WasiHttp::default(),
            &options,
            &reporter(&options),
            &pull_request(request),
            &FileArchive(archive),
        )
        .map(Into::into)
        .map_err(Into::into)
    }

    fn pull_bundle_to_file_share(
        request: wit::Bundle,
        plan: wit::PullPlan,
        share: Vec<u32>,
        archive: &Descriptor,
        options: wit::Options,
    ) -> Result<wit::ShareSummary, wit::Error> {
        let options = Options::from(options);
        let http = WasiHttp::default();
        let done = ops::fetch_share(
            &http,
            &http,
            &options,
            &reporter(&options),
            &pull_request(request),
            &plan.into(),
            &share,
            &FileArchive(archive),
        )?;
        Ok(wit::ShareSummary {
            blobs_fetched: done.blobs,
            bytes_fetched: done.bytes,
        })
    }

    fn pull_bundle_to_stream_plan(
        request: wit::Bundle,
        options: wit::Options,
    ) -> Result<wit::StreamPlan, wit::Error> {
        let options = Options::from(options);
        let (head, plan) = ops::plan_bundle_to_stream(
            &WasiHttp::default(),
            &options,
            &reporter(&options),
            &pull_request(request),
        )?;
        Ok(wit::StreamPlan {
            head,
            plan: plan.into(),
        })
    }

    fn pull_bundle_to_stream_share(
        request: wit::Bundle,
        plan: wit::PullPlan,
        share: Vec<u32>,
        archive: Vec<OutputStream>,
        options: wit::Options,
    ) -> Result<wit::ShareSummary, wit::Error> {
        let options = Options::from(options);
        let mut writers: Vec<StreamWriter<'_>> = archive.iter().map(StreamWriter).collect();
        let mut outs: Vec<&mut dyn std::io::Write> = (writers.iter_mut())
            .map(|w| w as &mut dyn std::io::Write)
            .collect();
        let done = ops::fetch_share_to_streams(
            &WasiHttp::default(),
            &options,
            &reporter(&options),
            &pull_request(request),
            &plan.into(),
            &share,
            &mut outs,
        )?;
        Ok(wit::ShareSummary {
            blobs_fetched: done.blobs,
            bytes_fetched: done.bytes,
        })
    }

    fn push_file_plan(
        archive: &Descriptor,
        destination: String,
        options: wit::Options,
    ) -> Result<Option<wit::PushPlan>, wit::Error> {
        let options = Options::from(options);
        let plan = ops::plan_push_file(
            &WasiHttp::default(),
            &options,
            &reporter(&options),
            &FileArchive(archive),
            &destination,
        )?;
        Ok(plan.map(Into::into))
    }

    fn push_file_share(
        archive: &Descriptor,
        destination: String,
        plan: wit::PushPlan,
        share: Vec<u32>,
        options: wit::Options,
    ) -> Result<wit::PushShareSummary, wit::Error> {
        let options = Options::from(options);
        let done = ops::push_file_share(
            &WasiHttp::default(),
            &options,
            &reporter(&options),
            &FileArchive(archive),
            &destination,
            &plan.into(),
            &share,
        )?;
        Ok(wit::PushShareSummary {
            blobs_uploaded: done.blobs,
            bytes_uploaded: done.bytes,
        })
    }

    fn push_file_finish(
        archive: &Descriptor,
        destination: String,
        plan: wit::PushPlan,
        options: wit::Options,
    ) -> Result<wit::Summary, wit::Error> {
        let options = Options::from(options);
        ops::push_file_finish(
            &WasiHttp::default(),
            &options,
            &reporter(&options),
            &FileArchive(archive),
            &destination,
            &plan.into(),
        )
        .map(Into::into)
        .map_err(Into::into)
    }

    fn inspect(archive: &InputStream) -> Result<String, wit::Error> {
        let report = crate::archive::inspect(&mut StreamReader(archive))
            .map_err(|e| wit::Error::from(Error::InvalidArchive(e)))?;
        Ok(serde_json::to_string(&report).expect("a report serialises"))
    }
}

/// The signature `ops::push_vet` and `ops::push` share.
pub(super) type FromArchive = fn(
    &dyn Transport,
    &Options,
    &dyn Reporter,
    &mut dyn Read,
    &str,
) -> crate::error::Result<Summary>;

/// Runs `op` (vet or push) on an archive stream, through the WIT types.
fn from_archive(
    op: FromArchive,
    archive: &InputStream,
    destination: &str,
    options: wit::Options,
) -> Result<wit::Summary, wit::Error> {
    let options = Options::from(options);
    let report = reporter(&options);
    op(
        &WasiHttp::default(),
        &options,
        &report,
        &mut StreamReader(archive),
        destination,
    )
    .map(Into::into)
    .map_err(Into::into)
}

fn json_text(inventory: &Inventory) -> String {
    String::from_utf8(inventory.to_json()).expect("JSON is UTF-8")
}

fn reporter(options: &Options) -> impl Fn(&str) + use<> {
    let on = options.progress;
    move |line: &str| {
        if on {
            eprintln!("imo: {line}");
        }
    }
}
