-- Each user's token version, carried in their access tokens (`ver`): a token of an older
-- version is refused. Whatever changes who a user is or whether they may sign in moves it,
-- by a trigger, so no path that updates users (CLI, API, an import) can forget to.
ALTER TABLE users ADD COLUMN IF NOT EXISTS token_version integer NOT NULL DEFAULT 0;

CREATE OR REPLACE FUNCTION users_revoke_tokens() RETURNS trigger AS $$
BEGIN
    NEW.token_version := OLD.token_version + 1;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS users_revoke_tokens ON users;
CREATE TRIGGER users_revoke_tokens BEFORE UPDATE ON users FOR EACH ROW
WHEN (OLD.password_hash IS DISTINCT FROM NEW.password_hash OR OLD.active <> NEW.active
      OR OLD.role <> NEW.role OR OLD.unit_code <> NEW.unit_code
      OR OLD.department_code IS DISTINCT FROM NEW.department_code)
EXECUTE FUNCTION users_revoke_tokens();
