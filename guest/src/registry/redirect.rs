//! Redirects: the only place they are followed, and `Authorization` dropped off-origin.

use super::Client;
use super::http::{BodyWriter, Method, Request, Response, Url};
use crate::error::{Error, Result};

/// How many redirects a blob request may follow.
const MAX_REDIRECTS: usize = 5;

impl Client<'_> {
    /// One exchange, following redirects for GET and HEAD and never sending the
    /// authorization to another host.
    pub(super) fn send_once(
        &self,
        method: Method,
        url: Url,
        mut headers: Vec<(String, String)>,
        body: Option<BodyWriter<'_>>,
    ) -> Result<Response> {
        let mut url = url;
        let auth_header = self.authorization()?;
        let base_len = headers.len();
        let mut body = body;
        for _ in 0..=MAX_REDIRECTS {
            headers.truncate(base_len);
            if url.authority == self.origin.authority
                && let Some(a) = &auth_header
            {
                headers.push(("authorization".into(), a.clone()));
            }
            let resp = self.transport.send(
                &Request {
                    method,
                    url: url.clone(),
                    headers: headers.clone(),
                },
                body.take(),
            )?;
            let redirect = matches!(resp.status, 301 | 302 | 303 | 307 | 308)
                && matches!(method, Method::Get | Method::Head);
            if !redirect {
                return Ok(resp);
            }
            let Some(location) = resp.header("location") else {
                return Ok(resp);
            };
            url = url
                .join(location)
                .map_err(|e| Error::Registry(format!("{}: redirect {e}", self.registry)))?;
        }
        Err(Error::Registry(format!(
            "{}: more than {MAX_REDIRECTS} redirects",
            self.registry
        )))
    }
}
