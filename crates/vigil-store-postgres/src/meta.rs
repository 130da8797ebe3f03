//! Meta documents (credentials, schemas, signing keys) in `vigil_meta`: one row per name,
//! whose version grows by one with every save, so `save_meta_if` is a compare-and-swap
//! several nodes can race on.

use vigil_store::MetaVersion;

use crate::PgStore;
use crate::error::Result;

impl PgStore {
    pub(crate) async fn load_meta_inner(
        &self,
        name: &str,
    ) -> Result<Option<(MetaVersion, Vec<u8>)>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT version, doc FROM vigil_meta WHERE name = $1",
                &[&name],
            )
            .await?;
        Ok(row.map(|r| {
            let version: i64 = r.get(0);
            (version.unsigned_abs(), r.get(1))
        }))
    }

    pub(crate) async fn save_meta_inner(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO vigil_meta (name, version, doc) VALUES ($1, 1, $2)
                 ON CONFLICT (name) DO UPDATE
                   SET doc = EXCLUDED.doc, version = vigil_meta.version + 1, updated_at = now()",
                &[&name, &bytes],
            )
            .await?;
        Ok(())
    }

    pub(crate) async fn save_meta_if_inner(
        &self,
        name: &str,
        expected: Option<MetaVersion>,
        bytes: &[u8],
    ) -> Result<Option<MetaVersion>> {
        let client = self.client().await?;
        let row = match expected {
            None => {
                client
                    .query_opt(
                        "INSERT INTO vigil_meta (name, version, doc) VALUES ($1, 1, $2)
                         ON CONFLICT (name) DO NOTHING RETURNING version",
                        &[&name, &bytes],
                    )
                    .await?
            }
            Some(v) => {
                let v = i64::try_from(v).unwrap_or(-1);
                client
                    .query_opt(
                        "UPDATE vigil_meta SET doc = $2, version = version + 1, updated_at = now()
                          WHERE name = $1 AND version = $3 RETURNING version",
                        &[&name, &bytes, &v],
                    )
                    .await?
            }
        };
        Ok(row.map(|r| r.get::<_, i64>(0).unsigned_abs()))
    }

    pub(crate) async fn meta_version_inner(&self, name: &str) -> Result<Option<MetaVersion>> {
        let client = self.client().await?;
        let row = client
            .query_opt("SELECT version FROM vigil_meta WHERE name = $1", &[&name])
            .await?;
        Ok(row.map(|r| r.get::<_, i64>(0).unsigned_abs()))
    }
}
